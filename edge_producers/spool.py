"""Store-and-forward spool: every record is on disk before it is sent, until the lake acknowledges it.

One SQLite file per device (WAL mode). A record's ``seq`` (per device, per topic) is assigned in the
same transaction that stores it, so a crash can neither reuse a seq nor leave a gap that is not a
real loss. Records are deleted only when the lake acknowledges them (``acknowledge``) or when the
size bound forces an eviction, which is logged and counted as a loss when the record had not yet
reached Kafka.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from schemas.timebase import now_us

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL,
    seq INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    size INTEGER NOT NULL,
    delivered INTEGER NOT NULL DEFAULT 0,
    UNIQUE (topic, seq)
);
CREATE TABLE IF NOT EXISTS counters (topic TEXT PRIMARY KEY, next_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS acks (topic TEXT PRIMARY KEY, acked_seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS stats (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


class AckRefused(ValueError):
    """A spool acknowledgment that claims more than this spool ever sent."""


@dataclass(frozen=True)
class SpooledRecord:
    id: int
    topic: str
    seq: int
    key: bytes | None
    value: bytes


@dataclass(frozen=True)
class SpoolStats:
    records: int
    bytes: int
    undelivered: int
    losses: int
    evicted: int


class Spool:
    def __init__(
        self,
        path: Path,
        max_bytes: int,
        when_full: Literal["drop_oldest", "refuse_new"] = "drop_oldest",
        synchronous: Literal["FULL", "NORMAL"] = "FULL",
    ) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self.max_bytes = max_bytes
        self.when_full = when_full
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a record the Pi spooled (and may send) survives a power cut, so a seq once used is
        # never handed out again; NORMAL may lose the last commits. NORMAL is for measuring the cost.
        self._synchronous = synchronous
        self._db.execute(f"PRAGMA synchronous={synchronous}")
        self._db.executescript(_SCHEMA)
        # The spool's generation: a spool made anew (new SD card, reset home) numbers seqs from 0
        # again, and its records must not be taken for the old ones (bronze keys on the epoch too).
        self._db.execute("INSERT OR IGNORE INTO meta (name, value) VALUES ('epoch', ?)", (now_us(),))
        self.epoch = int(self._db.execute("SELECT value FROM meta WHERE name = 'epoch'").fetchone()[0])
        self._next_seq: dict[str, int] = {}
        for topic, next_seq in self._db.execute("SELECT topic, next_seq FROM counters"):
            self._next_seq[topic] = next_seq
        for topic, top in self._db.execute("SELECT topic, MAX(seq) FROM records GROUP BY topic"):
            self._next_seq[topic] = max(self._next_seq.get(topic, 0), top + 1)
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(1 - delivered), 0) FROM records"
        ).fetchone()
        self._bytes, self._count, self._undelivered = row
        self._stats = dict(self._db.execute("SELECT name, value FROM stats"))
        self._last_id = int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM records").fetchone()[0])

    # -- writing -----------------------------------------------------------------------------

    def append(self, topic: str, key: bytes | None, encode: Callable[[int], bytes]) -> int | None:
        """Assign the next seq of ``topic``, encode the record with it and store it atomically.

        Returns the seq, or None when the spool is full under ``refuse_new`` (counted as a loss).
        """
        return self.append_many(topic, key, [encode])[0]

    def append_many(
        self, topic: str, key: bytes | None, encoders: Iterable[Callable[[int], bytes]]
    ) -> list[int | None]:
        seqs: list[int | None] = []
        last_id = None
        with self._lock:
            counters_before = dict(self._next_seq)
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for encode in encoders:
                    seq = self._next_seq.get(topic, 0)
                    self._next_seq[topic] = seq + 1
                    value = encode(seq)
                    if not self._make_room(len(value)):
                        self._bump("losses", 1)
                        seqs.append(None)
                        continue
                    inserted = self._db.execute(
                        "INSERT INTO records (topic, seq, key, value, size) VALUES (?, ?, ?, ?, ?)",
                        (topic, seq, key, value, len(value)),
                    )
                    last_id = inserted.lastrowid
                    self._bytes += len(value)
                    self._count += 1
                    self._undelivered += 1
                    seqs.append(seq)
                self._db.execute(
                    "INSERT INTO counters (topic, next_seq) VALUES (?, ?) "
                    "ON CONFLICT(topic) DO UPDATE SET next_seq = excluded.next_seq",
                    (topic, self._next_seq.get(topic, 0)),
                )
                self._db.execute("COMMIT")
                if last_id is not None:
                    self._last_id = last_id
            except BaseException:
                self._db.execute("ROLLBACK")
                self._next_seq = counters_before
                self._reload_counts()
                raise
        return seqs

    def _make_room(self, size: int) -> bool:
        """Enforce the size bound before storing ``size`` more bytes (inside the transaction)."""
        if self._bytes + size <= self.max_bytes:
            return True
        if self.when_full == "refuse_new":
            if self._stats.get("refusals_logged", 0) % 1000 == 0:
                log.warning(
                    "spool %s full (%d bytes): refusing new records (policy refuse_new)", self.path.name, self._bytes
                )
            self._bump("refusals_logged", 1)
            return False
        # drop_oldest: free 10 % more than needed so eviction is not paid on every append.
        target = self.max_bytes * 0.9 - size
        freed_delivered = self._evict("delivered = 1", target)
        lost = 0
        if self._bytes > target:
            lost = self._evict("delivered = 0", target)
            self._bump("losses", lost)
        if freed_delivered or lost:
            log.warning(
                "spool %s full: evicted %d delivered-but-unacknowledged and %d undelivered (lost) "
                "records (policy drop_oldest)",
                self.path.name,
                freed_delivered,
                lost,
            )
        fits: bool = self._bytes + size <= self.max_bytes
        return fits

    def _evict(self, condition: str, target_bytes: float) -> int:
        evicted = 0
        while self._bytes > target_bytes:
            rows = self._db.execute(
                f"SELECT id, size, delivered FROM records WHERE {condition} ORDER BY id LIMIT 256"
            ).fetchall()
            if not rows:
                break
            cut = []
            for row_id, size, delivered in rows:
                cut.append(row_id)
                self._bytes -= size
                self._count -= 1
                self._undelivered -= 1 - delivered
                if self._bytes <= target_bytes:
                    break
            self._db.execute(f"DELETE FROM records WHERE id IN ({','.join('?' * len(cut))})", cut)
            evicted += len(cut)
        self._bump("evicted", evicted)
        return evicted

    def _bump(self, name: str, amount: int) -> None:
        if amount:
            self._stats[name] = self._stats.get(name, 0) + amount
            self._db.execute(
                "INSERT INTO stats (name, value) VALUES (?, ?) ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, self._stats[name]),
            )

    def _reload_counts(self) -> None:
        row = self._db.execute(
            "SELECT COALESCE(SUM(size), 0), COUNT(*), COALESCE(SUM(1 - delivered), 0) FROM records"
        ).fetchone()
        self._bytes, self._count, self._undelivered = row

    # -- sending -----------------------------------------------------------------------------

    def fetch_after(self, after_id: int, limit: int) -> list[SpooledRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT id, topic, seq, key, value FROM records WHERE id > ? ORDER BY id LIMIT ?",
                (after_id, limit),
            ).fetchall()
        return [SpooledRecord(*row) for row in rows]

    def first_undelivered_id(self) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT MIN(id) FROM records WHERE delivered = 0").fetchone()
        first: int | None = row[0]
        return first

    def last_id(self) -> int:
        """The newest row id ever stored (ids only grow: AUTOINCREMENT)."""
        return self._last_id

    def mark_delivered(self, ids: list[int]) -> None:
        if not ids:
            return
        with self._lock:
            # A delivery flag needs no flush of its own: lost to a power cut, it only means the record
            # is sent again (bronze drops the duplicate); the next record's FULL commit flushes it.
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("BEGIN IMMEDIATE")
            changed = 0
            for start in range(0, len(ids), 500):
                chunk = ids[start : start + 500]
                cursor = self._db.execute(
                    f"UPDATE records SET delivered = 1 WHERE delivered = 0 AND id IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                changed += cursor.rowcount
            self._db.execute("COMMIT")
            self._db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._undelivered -= changed

    # -- acknowledgment from the lake --------------------------------------------------------

    def acknowledge(self, topic: str, acked_seq: int, acked_epoch: int | None) -> int:
        """The lake stored every seq <= acked_seq of ``topic`` from this spool's ``epoch``: delete
        those that were delivered.

        An ack is only a claim (a leaked key could sign a false one), so it frees no more than this
        spool can know was sent: rows already delivered, at or below its own newest seq, of its own
        epoch. Anything else is refused (AckRefused) and frees nothing. Returns rows freed.
        """
        if acked_epoch != self.epoch:
            raise AckRefused(
                f"ack for {topic} seq {acked_seq} is for spool epoch {acked_epoch}, this spool's "
                f"is {self.epoch}; nothing deleted"
            )
        with self._lock:
            newest = self._next_seq.get(topic, 0) - 1
            if acked_seq > newest:
                raise AckRefused(
                    f"ack for {topic} seq {acked_seq} is beyond the newest seq this spool "
                    f"assigned ({newest}); nothing deleted"
                )
            self._db.execute("BEGIN IMMEDIATE")
            freed = self._db.execute(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM records WHERE topic = ? AND seq <= ? AND delivered = 1",
                (topic, acked_seq),
            ).fetchone()
            self._db.execute("DELETE FROM records WHERE topic = ? AND seq <= ? AND delivered = 1", (topic, acked_seq))
            self._db.execute(
                "INSERT INTO acks (topic, acked_seq) VALUES (?, ?) ON CONFLICT(topic) "
                "DO UPDATE SET acked_seq = MAX(acked_seq, excluded.acked_seq)",
                (topic, acked_seq),
            )
            self._db.execute("COMMIT")
            self._count -= freed[0]
            self._bytes -= freed[1]
        return int(freed[0])

    def acked_seq(self, topic: str) -> int | None:
        with self._lock:
            row = self._db.execute("SELECT acked_seq FROM acks WHERE topic = ?", (topic,)).fetchone()
        return None if row is None else int(row[0])

    def next_seq(self, topic: str) -> int:
        with self._lock:
            return self._next_seq.get(topic, 0)

    def stats(self) -> SpoolStats:
        with self._lock:
            return SpoolStats(
                records=self._count,
                bytes=self._bytes,
                undelivered=self._undelivered,
                losses=self._stats.get("losses", 0),
                evicted=self._stats.get("evicted", 0),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
