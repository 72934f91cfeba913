from pathlib import Path

import pytest

from core.settings import EdgeSettings
from edge_producers.control import CommandRefused, ControlListener, apply_config
from schemas.codec import default_codec
from schemas.signing import DEVICE, HUB, Keyring, new_key, sign
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


KEYS = {device: new_key(device) for device in ("pi-1", "pi-2")}


def _listener(seen: list, tmp_path: Path) -> ControlListener:
    keyring = Keyring(tmp_path / "keyring.json")
    keyring.add(KEYS["pi-1"])  # a Pi's keyring holds only its own key
    return ControlListener(
        {},
        "devices.control",
        default_codec(),
        seen.append,
        not_before_us=1000,
        keyring=keyring,
        devices={"pi-1"},
        max_age_us=60_000_000,
        clock=lambda: 5000,
    )


def _unsigned(**fields):
    record = {**sample_records()["control"], "kind": "STOP", "issued_us": 5000, **fields}
    return default_codec().encode("control", record)


def _command(key: str = "pi-1", direction: bytes = HUB, **fields):
    return sign(_unsigned(**fields), "devices.control", KEYS[key], direction)


def test_malformed_messages_are_counted_refusals(tmp_path: Path) -> None:
    seen: list = []
    listener = _listener(seen, tmp_path)
    listener.accept(b"garbage")
    listener.accept(None)
    listener.accept(default_codec().encode("marker", sample_records()["marker"]))
    assert listener.refused == 3 and seen == []


def test_old_and_repeated_commands_are_ignored_acks_pass(tmp_path: Path) -> None:
    seen: list = []
    listener = _listener(seen, tmp_path)
    listener.accept(_command(command_id="a", issued_us=10))  # before the listener started
    listener.accept(_command(command_id="b"))
    listener.accept(_command(command_id="b"))  # re-read after the broker's watermark quirk
    listener.accept(_command(command_id="c", kind="SPOOL_ACK", issued_us=1))
    assert [r["command_id"] for r in seen] == ["b", "c"]


def test_only_the_hub_signing_for_this_device_is_obeyed(tmp_path: Path) -> None:
    seen: list = []
    listener = _listener(seen, tmp_path)
    listener.accept(_unsigned(command_id="unsigned"))
    listener.accept(_command(key="pi-2", command_id="other-key"))  # a key this Pi does not hold
    listener.accept(_command(command_id="stale", issued_us=5000 - 61_000_000))
    listener.accept(_command(command_id="future", issued_us=5000 + 61_000_000))
    tampered = bytearray(_command(command_id="tampered", kind="STOP"))
    tampered[30] ^= 1
    listener.accept(bytes(tampered))
    assert seen == [] and listener.refused == 5
    # A message keyed to another device is not this Pi's business.
    listener.accept(_unsigned(command_id="elsewhere"), b"pi-2")
    assert seen == [] and listener.refused == 5
    # Anything signed as a device (a reflected or leaked device record, even a command ack, which
    # devices send on devices.acks) is refused.
    listener.accept(_command(command_id="reflected", kind="SHUTDOWN", direction=DEVICE))
    listener.accept(_command(command_id="reply", kind="COMMAND_ACK", direction=DEVICE))
    assert seen == [] and listener.refused == 7
    listener.accept(_command(command_id="real"), b"pi-1")
    assert [r["command_id"] for r in seen] == ["real"]


def test_a_command_signed_for_one_device_cannot_name_another(tmp_path: Path) -> None:
    seen: list = []
    keyring = Keyring(tmp_path / "keyring.json")
    keyring.add(KEYS["pi-1"])
    keyring.add(KEYS["pi-2"])  # a process hosting both devices
    listener = ControlListener(
        {},
        "devices.control",
        default_codec(),
        seen.append,
        not_before_us=1000,
        keyring=keyring,
        devices={"pi-1", "pi-2"},
        clock=lambda: 5000,
    )
    listener.accept(_command(key="pi-2", command_id="x", device_id="pi-1"))
    assert seen == [] and listener.refused == 1
