"""The hub's signed commands and the Pi's signed acks, without Kafka: what a Pi obeys and what the
hub believes."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import NeurolakeError
from edge_producers.control import ControlListener
from infra.commands import COMMAND_KINDS, is_ack_of, settings_pairs, sign_command, verified_ack
from schemas.catalog import COMMAND_ACKS
from schemas.codec import default_codec
from schemas.records import control_record
from schemas.signing import HUB, Keyring, ensure_key, sign
from schemas.timebase import now_us


@pytest.fixture
def hub(tmp_path: Path) -> Keyring:
    keyring = Keyring(tmp_path / "hub-keyring.json")
    ensure_key(keyring, "pi-1")
    ensure_key(keyring, "pi-2")
    return keyring


def _pi_listener(hub: Keyring, tmp_path: Path, seen: list) -> ControlListener:
    own = Keyring(tmp_path / "pi-keyring.json")
    key = hub.active_key("pi-1")
    assert key is not None
    own.add(key)
    return ControlListener(
        {}, "devices.control", default_codec(), seen.append, not_before_us=0, keyring=own, devices={"pi-1"}
    )


def test_a_signed_command_is_what_the_pi_obeys(hub: Keyring, tmp_path: Path) -> None:
    seen: list = []
    listener = _pi_listener(hub, tmp_path, seen)
    command = sign_command(hub, "pi-1", "SET_CONFIG", {"stimulus.rest_s": "3"}, sender="hub-dashboard")
    listener.accept(command.value, b"pi-1")
    assert [(r["kind"], r["config"], r["command_id"]) for r in seen] == [
        ("SET_CONFIG", {"stimulus.rest_s": "3"}, command.command_id)
    ]
    # The same command again (a replay) is not obeyed twice; one for another Pi is not this Pi's.
    listener.accept(command.value, b"pi-1")
    listener.accept(sign_command(hub, "pi-2", "STOP").value, b"pi-2")
    assert len(seen) == 1 and listener.refused == 0


def test_commands_the_hub_cannot_sign_or_send_are_refused_with_the_fix(hub: Keyring) -> None:
    assert set(COMMAND_KINDS) == {"START", "STOP", "RESTART", "SET_CONFIG", "SHUTDOWN"}
    with pytest.raises(NeurolakeError, match="no active key for 'pi-9'.*keys add pi-9"):
        sign_command(hub, "pi-9", "STOP")
    with pytest.raises(NeurolakeError, match="SET_CONFIG only"):
        sign_command(hub, "pi-1", "STOP", {"a": "1"})
    with pytest.raises(NeurolakeError, match="needs at least one"):
        sign_command(hub, "pi-1", "SET_CONFIG", {})
    with pytest.raises(NeurolakeError, match="SPOOL_ACK"):
        sign_command(hub, "pi-1", "SPOOL_ACK")
    assert settings_pairs(["a.b = 3", "c=x=y"]) == {"a.b": "3", "c": "x=y"}
    with pytest.raises(NeurolakeError, match="KEY=VALUE"):
        settings_pairs(["rest_s"])


def _ack(device_id: str, in_reply_to: str) -> dict:
    return control_record(
        device_id=device_id, kind="COMMAND_ACK", sender=device_id, issued_us=now_us(), in_reply_to=in_reply_to,
        ok=True, message="stopped",
    )  # fmt: skip


def test_only_the_commanded_devices_own_signed_ack_answers_a_command(hub: Keyring) -> None:
    codec = default_codec()
    command = sign_command(hub, "pi-1", "STOP")
    pi1, pi2 = hub.active_key("pi-1"), hub.active_key("pi-2")
    assert pi1 is not None and pi2 is not None
    good = verified_ack(hub, sign(codec.encode("control", _ack("pi-1", command.command_id)), COMMAND_ACKS, pi1), codec)
    assert good is not None and is_ack_of(good[0], command, good[1])
    # pi-2 answering for pi-1, pi-2's own ack, an ack signed as the hub, or unsigned: not believed.
    forged = sign(codec.encode("control", _ack("pi-1", command.command_id)), COMMAND_ACKS, pi2)
    assert verified_ack(hub, forged, codec) is None
    other = verified_ack(hub, sign(codec.encode("control", _ack("pi-2", command.command_id)), COMMAND_ACKS, pi2), codec)
    assert other is not None and not is_ack_of(other[0], command, other[1])
    as_hub = sign(codec.encode("control", _ack("pi-1", command.command_id)), COMMAND_ACKS, pi1, HUB)
    assert verified_ack(hub, as_hub, codec) is None
    assert verified_ack(hub, codec.encode("control", _ack("pi-1", command.command_id)), codec) is None
    assert verified_ack(hub, None, codec) is None
    stale = verified_ack(hub, sign(codec.encode("control", _ack("pi-1", "another")), COMMAND_ACKS, pi1), codec)
    assert stale is not None and not is_ack_of(stale[0], command, stale[1])
