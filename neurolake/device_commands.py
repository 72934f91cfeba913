"""``neurolake command DEVICE KIND``: the hub commands one Pi, signed with that device's key, and
waits for the device's own (signed) COMMAND_ACK."""

from __future__ import annotations

import argparse
import json
import logging
import time
import uuid

from core.errors import NeurolakeError
from core.settings import Settings
from schemas.catalog import COMMAND_ACKS, CONTROL
from schemas.codec import default_codec
from schemas.records import CONTROL_KINDS, control_record
from schemas.signing import DEVICE, HUB, Keyring, SignatureError, sign
from schemas.timebase import now_us

log = logging.getLogger(__name__)

COMMAND_KINDS = sorted(CONTROL_KINDS - {"SPOOL_ACK", "COMMAND_ACK"})


def _settings_pairs(pairs: list[str]) -> dict[str, str]:
    config = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise NeurolakeError(f"--set {pair!r}: write KEY=VALUE, e.g. --set stimulus.rest_s=3")
        config[name.strip()] = value.strip()
    return config


def send_command(
    settings: Settings, device_id: str, kind: str, config: dict[str, str], wait_s: float
) -> dict[str, object] | None:
    """Send one signed command; the device's ack (None if none came within ``wait_s``)."""
    from confluent_kafka import OFFSET_END, Consumer, Producer, TopicPartition

    keyring = Keyring(settings.security.keyring)
    key = keyring.active_key(device_id)
    if key is None:
        raise NeurolakeError(
            f"no active key for {device_id!r}: a Pi obeys only commands signed with its key "
            f"(`neurolake keys list`; `neurolake keys add {device_id}`)"
        )
    codec = default_codec()
    command_id = uuid.uuid4().hex
    record = control_record(
        device_id=device_id,
        kind=kind,
        sender="hub-cli",
        issued_us=now_us(),
        command_id=command_id,
        config=config,
    )
    consumer = Consumer(
        {**settings.kafka.client_config(), "group.id": "neurolake-command", "enable.auto.commit": False}
    )
    try:
        # Devices acknowledge on their own topic: they may write it and never devices.control.
        partitions = consumer.list_topics(COMMAND_ACKS, timeout=10).topics[COMMAND_ACKS].partitions
        consumer.assign([TopicPartition(COMMAND_ACKS, p, OFFSET_END) for p in partitions])
        producer = Producer(settings.kafka.producer_config())
        producer.produce(
            CONTROL, key=device_id.encode(), value=sign(codec.encode("control", record), CONTROL, key, HUB)
        )
        if producer.flush(10):
            raise NeurolakeError(f"the command was not delivered to Kafka at {settings.kafka.bootstrap_servers}")
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            message = consumer.poll(0.2)
            if message is None or message.error() is not None:
                continue
            try:
                signed, signer = keyring.verify(message.value(), COMMAND_ACKS, direction=DEVICE)
                _, ack = codec.decode(signed, expected_type="control")
            except (SignatureError, ValueError):
                continue  # not a reply we can trust
            if ack["kind"] == "COMMAND_ACK" and ack["in_reply_to"] == command_id and signer.device_id == device_id:
                return ack
        return None
    finally:
        consumer.close()


def _cmd_command(args: argparse.Namespace, settings: Settings) -> int:
    config = _settings_pairs(args.set or [])
    if config and args.kind != "SET_CONFIG":
        raise NeurolakeError("--set goes with SET_CONFIG only")
    ack = send_command(settings, args.device, args.kind, config, args.wait)
    if ack is None:
        print(
            f"{args.kind} sent to {args.device}; no acknowledgment within {args.wait:.0f} s "
            "(is the Pi running and its clock within security.control_max_age_s of the hub?)"
        )
        return 1
    print(json.dumps({k: ack[k] for k in ("device_id", "ok", "message")}))
    return 0 if ack["ok"] else 1


def add_device_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    command = commands.add_parser("command", help="send one Pi a signed command and wait for its ack")
    command.add_argument("device", help="the device id (one device: commands are signed per device)")
    command.add_argument("kind", choices=COMMAND_KINDS)
    command.add_argument("--set", action="append", metavar="KEY=VALUE", help="a setting, for SET_CONFIG")
    command.add_argument("--wait", type=float, default=15.0, help="seconds to wait for the ack")
    command.set_defaults(handler=_cmd_command)
