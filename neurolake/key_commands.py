"""``neurolake keys``: the hub's device keys (schemas/signing.py): add, register, rotate, revoke, list."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
from dataclasses import asdict
from pathlib import Path

from core.errors import NeurolakeError
from core.settings import Settings
from infra.tls import issued_names, tls_dir
from schemas.signing import DeviceKey, Keyring, SignatureError, new_key


def _when(us: int | None) -> str:
    return "-" if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="seconds")


def _write_key_file(key: DeviceKey, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(asdict(key), handle, indent=1)


def _cmd_list(args: argparse.Namespace, settings: Settings) -> int:
    keys = Keyring(settings.security.keyring).keys()
    if args.json:
        print(json.dumps([{k: v for k, v in asdict(key).items() if k != "secret"} for key in keys], indent=2))
        return 0
    if not keys:
        print(f"no device keys in {settings.security.keyring}; `neurolake keys add DEVICE` makes one")
        return 0
    print(f"{'device':<16} {'key id':<28} {'created':<26} revoked")
    for key in keys:
        print(f"{key.device_id:<16} {key.key_id:<28} {_when(key.created_us):<26} {_when(key.revoked_us)}")
    return 0


def _cmd_add(args: argparse.Namespace, settings: Settings) -> int:
    keyring = Keyring(settings.security.keyring)
    old = keyring.active_key(args.device)
    if old is not None and not args.rotate:
        raise NeurolakeError(f"{args.device} already has key {old.key_id}; use `neurolake keys rotate {args.device}`")
    key = new_key(args.device)
    keyring.add(key)
    out = args.out or Path(f"{args.device}.key.json")
    _write_key_file(key, out)
    print(
        f"key {key.key_id} for {args.device} registered; copy {out} privately to the Pi and run "
        f"`neurolake keys install {out.name}` there, then delete it"
    )
    if old is not None:
        keyring.revoke(old.key_id)
        print(f"old key {old.key_id} revoked: the Pi's records signed with it are quarantined from now on")
    return 0


def _read_key_file(path: Path) -> DeviceKey:
    try:
        raw = json.loads(path.read_text())
        key = DeviceKey(**raw)
        bytes.fromhex(key.secret)
    except FileNotFoundError:
        raise NeurolakeError(f"{path} does not exist") from None
    except (ValueError, TypeError) as exc:
        raise NeurolakeError(
            f"{path} is not a neurolake key file ({exc}); make one with `neurolake edge setup`"
        ) from None
    return key


def _cmd_register(args: argparse.Namespace, settings: Settings) -> int:
    """A key made on a Pi by `neurolake edge setup`, registered on the hub (or installed on a Pi)."""
    key = _read_key_file(args.file)
    keyring = Keyring(settings.security.keyring)
    if key.key_id in {k.key_id for k in keyring.keys()}:
        raise NeurolakeError(f"key {key.key_id} is already in {settings.security.keyring}")
    keyring.add(key)
    print(f"key {key.key_id} of {key.device_id} added to {settings.security.keyring}; delete {args.file}")
    return 0


def _cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    try:
        key = Keyring(settings.security.keyring).revoke(args.key_id)
    except SignatureError as exc:
        raise NeurolakeError(str(exc)) from None
    print(f"key {key.key_id} of {key.device_id} revoked at {_when(key.revoked_us)}")
    if key.device_id in issued_names(tls_dir(settings)):
        print(
            f"{key.device_id}'s TLS certificate still admits it to the broker; a lost Pi: "
            f"`neurolake tls revoke {key.device_id}`"
        )
    return 0


def add_key_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    keys = commands.add_parser("keys", help="device keys that sign records and commands (security model)")
    sub = keys.add_subparsers(dest="keys_command", metavar="KEYS_COMMAND", required=True)
    listing = sub.add_parser("list", help="every key, active and revoked (secrets not shown)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_cmd_list)
    for name, rotate, text in (
        ("add", False, "make and register a key for a device"),
        ("rotate", True, "make a new key for a device and revoke its old one"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("device")
        parser.add_argument("--out", type=Path, help="the key file to copy to the Pi (default DEVICE.key.json)")
        parser.set_defaults(handler=_cmd_add, rotate=rotate)
    for name, text in (
        ("register", "register a key made on a Pi by `neurolake edge setup`"),
        ("install", "install on a Pi a key made on the hub by `neurolake keys add`"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("file", type=Path)
        parser.set_defaults(handler=_cmd_register)
    revoke = sub.add_parser("revoke", help="stop accepting a key (its records are quarantined)")
    revoke.add_argument("key_id")
    revoke.set_defaults(handler=_cmd_revoke)
