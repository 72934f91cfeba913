"""``neurolake command DEVICE KIND``: the hub commands one Pi, signed with that device's key, and
waits for the device's own (signed) COMMAND_ACK. The signing and the ack check are
``infra/commands.py``'s, shared with the dashboard's fleet controls."""

from __future__ import annotations

import argparse
import json

from core.errors import NeurolakeError
from core.settings import Settings
from infra.commands import COMMAND_KINDS, send_command, settings_pairs


def _cmd_command(args: argparse.Namespace, settings: Settings) -> int:
    config = settings_pairs(args.set or [])
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
