"""The hub's signed commands to one Pi, and the Pi's signed acknowledgments: one path for every
caller (``neurolake command``, the dashboard's fleet controls).

A command is a ``control`` record signed with the device's key as the hub signs
(schemas/signing.py), keyed by the device id, on ``devices.control``; the Pi obeys only fresh,
unseen commands signed for itself and replies with a COMMAND_ACK signed as the device, on
``devices.acks`` (a topic it may write, unlike ``devices.control``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from core.errors import NeurolakeError
from core.settings import Settings
from schemas.catalog import COMMAND_ACKS, CONTROL
from schemas.codec import AvroCodec, default_codec
from schemas.records import CONTROL_KINDS, control_record
from schemas.signing import DEVICE, HUB, Keyring, SignatureError, sign
from schemas.timebase import now_us

log = logging.getLogger(__name__)

# What the hub may ask of a Pi (the rest of the control kinds are acknowledgments).
COMMAND_KINDS: tuple[str, ...] = tuple(sorted(CONTROL_KINDS - {"SPOOL_ACK", "COMMAND_ACK"}))


def settings_pairs(pairs: list[str]) -> dict[str, str]:
    """``["stimulus.rest_s=3", ...]`` as a SET_CONFIG mapping; a malformed pair names the fix."""
    config = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise NeurolakeError(f"setting {pair!r}: write KEY=VALUE, e.g. stimulus.rest_s=3")
        config[name.strip()] = value.strip()
    return config


@dataclass(frozen=True)
class SignedCommand:
    command_id: str
    device_id: str
    kind: str
    config: Mapping[str, str]
    issued_us: int
    value: bytes  # the signed record, as it goes on devices.control


def sign_command(
    keyring: Keyring,
    device_id: str,
    kind: str,
    config: Mapping[str, str] | None = None,
    sender: str = "hub",
    codec: AvroCodec | None = None,
) -> SignedCommand:
    """A command for ``device_id``, signed with that device's active key as the hub."""
    if kind not in COMMAND_KINDS:
        raise NeurolakeError(f"command {kind!r} is not one of {', '.join(COMMAND_KINDS)}")
    if config and kind != "SET_CONFIG":
        raise NeurolakeError("settings go with SET_CONFIG only")
    if kind == "SET_CONFIG" and not config:
        raise NeurolakeError("SET_CONFIG needs at least one KEY=VALUE setting")
    key = keyring.active_key(device_id)
    if key is None:
        raise NeurolakeError(
            f"no active key for {device_id!r}: a Pi obeys only commands signed with its key "
            f"(`neurolake keys list`; `neurolake keys add {device_id}`)"
        )
    codec = codec or default_codec()
    issued = now_us()
    record = control_record(
        device_id=device_id,
        kind=kind,
        sender=sender,
        issued_us=issued,
        command_id=uuid.uuid4().hex,
        config=dict(config or {}),
    )
    value = sign(codec.encode("control", record), CONTROL, key, HUB)
    return SignedCommand(record["command_id"], device_id, kind, dict(config or {}), issued, value)


def is_ack_of(ack: Mapping[str, Any], command: SignedCommand, signer_device_id: str) -> bool:
    """Whether ``ack`` (a decoded record whose device signature names ``signer_device_id``) is the
    commanded device's own reply to ``command``."""
    return (
        ack.get("kind") == "COMMAND_ACK"
        and ack.get("in_reply_to") == command.command_id
        and ack.get("device_id") == command.device_id
        and signer_device_id == command.device_id
    )


def verified_ack(keyring: Keyring, value: bytes | None, codec: AvroCodec) -> tuple[dict[str, Any], str] | None:
    """(ack, signing device) of a raw ``devices.acks`` message, or None when it is not a COMMAND_ACK
    signed by the device it names."""
    if value is None:
        return None
    try:
        signed, signer = keyring.verify(value, COMMAND_ACKS, direction=DEVICE)
        _, ack = codec.decode(signed, expected_type="control")
    except (SignatureError, ValueError):
        return None
    if ack.get("kind") != "COMMAND_ACK" or ack.get("device_id") != signer.device_id:
        return None
    return ack, signer.device_id


class CommandSender:
    """One producer for the hub's commands. ``send`` does not wait: delivery reports come through
    ``poll`` (call it from a loop), and ``on_failed(command, reason)`` hears of a command Kafka did
    not take. Thread-safe, as the producer is."""

    def __init__(
        self,
        settings: Settings,
        sender: str,
        on_failed: Callable[[SignedCommand, str], None] = lambda command, reason: None,
    ) -> None:
        from confluent_kafka import Producer

        self.keyring = Keyring(settings.security.keyring)
        self.codec = default_codec()
        self.sender = sender
        self._on_failed = on_failed
        self._producer = Producer(
            {**settings.kafka.producer_config(), "logger": logging.getLogger("infra.commands.rdkafka")}
        )

    def send(self, device_id: str, kind: str, config: Mapping[str, str] | None = None) -> SignedCommand:
        # A key registered a moment ago (a new Pi, a simulator) must be usable at once.
        self.keyring.reload()
        command = sign_command(self.keyring, device_id, kind, config, self.sender, self.codec)

        def delivered(error: Any, _message: Any) -> None:
            if error is not None:
                log.warning("%s for %s not delivered: %s", kind, device_id, error)
                self._on_failed(command, f"not delivered to Kafka: {error}")

        self._producer.produce(CONTROL, key=device_id.encode(), value=command.value, on_delivery=delivered)
        self._producer.poll(0)
        log.info("%s sent to %s by %s (command %s)", kind, device_id, self.sender, command.command_id)
        return command

    def poll(self, timeout_s: float = 0.0) -> None:
        self._producer.poll(timeout_s)

    def flush(self, timeout_s: float) -> int:
        """Waits for delivery; returns the commands still undelivered."""
        return int(self._producer.flush(timeout_s))


def send_command(
    settings: Settings, device_id: str, kind: str, config: Mapping[str, str], wait_s: float, sender: str = "hub-cli"
) -> dict[str, Any] | None:
    """Send one signed command and wait for the device's ack (None if none came within ``wait_s``)."""
    from confluent_kafka import OFFSET_END, Consumer, TopicPartition

    commands = CommandSender(settings, sender)
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": "neurolake-command", "enable.auto.commit": False}
    )
    try:
        # Listen before sending: an ack can come back within milliseconds.
        partitions = consumer.list_topics(COMMAND_ACKS, timeout=10).topics[COMMAND_ACKS].partitions
        consumer.assign([TopicPartition(COMMAND_ACKS, p, OFFSET_END) for p in partitions])
        command = commands.send(device_id, kind, config)
        if commands.flush(10):
            raise NeurolakeError(f"the command was not delivered to Kafka at {settings.kafka.bootstrap_servers}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            verified = verified_ack(commands.keyring, message.value(), commands.codec)
            if verified is not None and is_ack_of(verified[0], command, verified[1]):
                return verified[0]
        return None
    finally:
        consumer.close()
