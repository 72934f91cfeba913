import pytest

from edge_producers.control import CommandRefused, ControlListener, apply_config
from neurolake.settings import EdgeSettings
from schemas.codec import default_codec
from tests.schemas.samples import sample_records


def test_apply_config_validates_and_names_the_key() -> None:
    edge = EdgeSettings()
    updated = apply_config(edge, {"block_size": "50", "camera.fps": "5"})
    assert updated.block_size == 50 and updated.camera.fps == 5.0
    assert edge.block_size == 25  # the original is untouched
    with pytest.raises(CommandRefused, match="cannot change board live"):
        apply_config(edge, {"board": "cyton"})
    with pytest.raises(CommandRefused, match="block_size"):
        apply_config(edge, {"block_size": "0"})
    with pytest.raises(CommandRefused, match="no settings"):
        apply_config(edge, {})


def _listener(seen: list) -> ControlListener:
    return ControlListener({}, "devices.control", default_codec(), seen.append, not_before_us=1000)


def _command(**fields):
    record = {**sample_records()["control"], "kind": "STOP", "issued_us": 5000, **fields}
    return default_codec().encode("control", record)


def test_malformed_messages_are_counted_refusals() -> None:
    seen: list = []
    listener = _listener(seen)
    listener.accept(b"garbage")
    listener.accept(None)
    listener.accept(default_codec().encode("marker", sample_records()["marker"]))
    assert listener.refused == 3 and seen == []


def test_old_and_repeated_commands_are_ignored_acks_pass() -> None:
    seen: list = []
    listener = _listener(seen)
    listener.accept(_command(command_id="a", issued_us=10))  # before the listener started
    listener.accept(_command(command_id="b"))
    listener.accept(_command(command_id="b"))  # re-read after the broker's watermark quirk
    listener.accept(_command(command_id="c", kind="SPOOL_ACK", issued_us=1))
    assert [r["command_id"] for r in seen] == ["b", "c"]
