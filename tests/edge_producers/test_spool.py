import time
from pathlib import Path

import pytest

from edge_producers.spool import AckRefused, Spool


def _value(size: int = 100):
    return lambda seq: seq.to_bytes(8, "little") + b"x" * (size - 8)


def test_seq_is_per_topic_contiguous_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    with Spool(path, 10_000_000) as spool:
        assert spool.append_many("eeg.raw", b"k", [_value()] * 5) == [0, 1, 2, 3, 4]
        assert spool.append("markers", b"k", _value()) == 0
        assert spool.append("eeg.raw", b"k", _value()) == 5
    with Spool(path, 10_000_000) as spool:
        assert spool.append("eeg.raw", b"k", _value()) == 6
        rows = spool.fetch_after(0, 100)
        assert [(r.topic, r.seq) for r in rows][:3] == [("eeg.raw", 0), ("eeg.raw", 1), ("eeg.raw", 2)]
        assert int.from_bytes(rows[2].value[:8], "little") == 2
        assert spool.stats().records == 8 and spool.stats().undelivered == 8


def test_acknowledge_deletes_up_to_seq_and_keeps_counting(tmp_path: Path) -> None:
    with Spool(tmp_path / "d.sqlite", 10_000_000) as spool:
        spool.append_many("eeg.raw", None, [_value()] * 10)
        spool.append_many("markers", None, [_value()] * 2)
        spool.mark_delivered([r.id for r in spool.fetch_after(0, 100)])
        assert spool.acknowledge("eeg.raw", 6, spool.epoch) == 7
        assert [r.seq for r in spool.fetch_after(0, 100) if r.topic == "eeg.raw"] == [7, 8, 9]
        assert spool.acked_seq("eeg.raw") == 6
        spool.acknowledge("eeg.raw", 3, spool.epoch)  # an older ack never moves backwards
        assert spool.acked_seq("eeg.raw") == 6
        assert spool.stats().records == 5
        assert spool.append("eeg.raw", None, _value()) == 10


def test_delivered_bookkeeping(tmp_path: Path) -> None:
    with Spool(tmp_path / "d.sqlite", 10_000_000) as spool:
        spool.append_many("eeg.raw", None, [_value()] * 4)
        ids = [r.id for r in spool.fetch_after(0, 10)]
        spool.mark_delivered(ids[:2])
        assert spool.first_undelivered_id() == ids[2]
        assert spool.stats().undelivered == 2


def test_drop_oldest_evicts_delivered_first_then_counts_losses(tmp_path: Path) -> None:
    with Spool(tmp_path / "d.sqlite", max_bytes=1000, when_full="drop_oldest") as spool:
        spool.append_many("eeg.raw", None, [_value()] * 10)  # exactly full
        ids = [r.id for r in spool.fetch_after(0, 100)]
        spool.mark_delivered(ids[:5])
        spool.append("eeg.raw", None, _value())
        stats = spool.stats()
        assert stats.losses == 0 and stats.evicted >= 1
        assert stats.bytes <= 1000
        assert all(r.seq >= 1 for r in spool.fetch_after(0, 100))
        # Nothing delivered left to evict: the oldest undelivered go, counted as losses.
        spool.mark_delivered([])
        for _ in range(10):
            spool.append("eeg.raw", None, _value())
        assert spool.stats().losses > 0
        assert spool.stats().bytes <= 1000


def test_refuse_new_keeps_backlog_and_counts_loss(tmp_path: Path) -> None:
    with Spool(tmp_path / "d.sqlite", max_bytes=300, when_full="refuse_new") as spool:
        assert spool.append_many("eeg.raw", None, [_value()] * 4) == [0, 1, 2, None]
        assert spool.stats().losses == 1
        # The refused record's seq is used: the lake sees the gap as the loss it is.
        spool.mark_delivered([r.id for r in spool.fetch_after(0, 100)])
        spool.acknowledge("eeg.raw", 2, spool.epoch)
        assert spool.append("eeg.raw", None, _value()) == 4


def test_failed_encode_rolls_back_without_consuming_seq(tmp_path: Path) -> None:
    def broken(seq: int) -> bytes:
        raise ValueError("bad record")

    with Spool(tmp_path / "d.sqlite", 10_000_000) as spool:
        spool.append("eeg.raw", None, _value())
        with pytest.raises(ValueError):
            spool.append_many("eeg.raw", None, [_value(), broken])
        assert spool.append("eeg.raw", None, _value()) == 1
        assert spool.stats().records == 2


def test_last_id_is_kept_in_memory_and_survives_reopen(tmp_path: Path) -> None:
    path = tmp_path / "d.sqlite"
    with Spool(path, 10_000_000) as spool:
        assert spool.last_id() == 0
        spool.append_many("eeg.raw", None, [_value()] * 3)
        newest = spool.fetch_after(0, 10)[-1].id
        assert spool.last_id() == newest
        with pytest.raises(ValueError):
            spool.append("eeg.raw", None, lambda seq: (_ for _ in ()).throw(ValueError("x")))
        assert spool.last_id() == newest  # a rolled-back insert does not count
    with Spool(path, 10_000_000) as spool:
        assert spool.last_id() == newest


def test_an_ack_frees_only_delivered_rows_and_one_beyond_the_newest_seq_is_refused(tmp_path: Path) -> None:
    with Spool(tmp_path / "d.sqlite", 10_000_000) as spool:
        spool.append_many("eeg.raw", None, [_value()] * 6)
        rows = spool.fetch_after(0, 100)
        spool.mark_delivered([r.id for r in rows[:3]])
        # A (forged or early) ack for all six frees only the three that were sent.
        assert spool.acknowledge("eeg.raw", 5, spool.epoch) == 3
        assert [r.seq for r in spool.fetch_after(0, 100)] == [3, 4, 5]
        with pytest.raises(AckRefused, match="beyond the newest seq"):
            spool.acknowledge("eeg.raw", 2**62, spool.epoch)
        with pytest.raises(AckRefused):
            spool.acknowledge("markers", 0, spool.epoch)  # nothing was ever spooled on that topic
        assert spool.stats().records == 3 and spool.stats().undelivered == 3


def test_an_ack_for_another_spool_epoch_frees_nothing(tmp_path: Path) -> None:
    with Spool(tmp_path / "old.sqlite", 10_000_000) as old:
        old_epoch = old.epoch
    time.sleep(0.001)
    # A reset spool (new SD card): seqs start at 0 again, under a new epoch.
    with Spool(tmp_path / "new.sqlite", 10_000_000) as spool:
        assert spool.epoch != old_epoch
        spool.append_many("eeg.raw", None, [_value()] * 3)
        spool.mark_delivered([r.id for r in spool.fetch_after(0, 100)])
        for stale in (old_epoch, None, 0):
            with pytest.raises(AckRefused, match="epoch"):
                spool.acknowledge("eeg.raw", 2, stale)
        assert spool.stats().records == 3
    with Spool(tmp_path / "new.sqlite", 10_000_000) as reopened:
        assert reopened.epoch == spool.epoch  # the epoch belongs to the file, across restarts
