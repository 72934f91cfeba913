"""`neurolake edge setup`: ask (or take from flags) a Pi's settings and write its neurolake.toml.

The file is validated with the same loader the producers use before it is written, so a Pi never
boots with a config that would be refused.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from core.errors import NeurolakeError
from core.settings import Settings, load_settings
from schemas.signing import DeviceKey, Keyring, ensure_key

QUESTIONS: tuple[tuple[str, str, Callable[[Settings], str]], ...] = (
    # (flag attribute, prompt, default from current settings)
    ("device_id", "Device id of this Pi", lambda s: s.edge.device_id),
    ("board", "EEG board (simulated, synthetic, playback, cyton, cyton_daisy, ganglion)", lambda s: s.edge.board),
    ("serial_port", "Serial port of the OpenBCI dongle (blank if none)", lambda s: s.edge.serial_port or ""),
    ("bootstrap_servers", "Kafka bootstrap servers on the hub", lambda s: s.kafka.bootstrap_servers),
    ("clock_host", "Hub address for clock probes", lambda s: s.clock.host),
    ("camera", "Camera (none, picamera2, test_pattern)", lambda s: s.edge.camera.source),
    ("sensors", "Room sensors (none, sense_hat, simulated)", lambda s: s.edge.sensors.source),
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(answers: dict[str, str], analog_mode: bool) -> str:
    lines = [
        "# Written by `neurolake edge setup`. Every key is documented in core/settings.py.",
        "[kafka]",
        f"bootstrap_servers = {_quote(answers['bootstrap_servers'])}",
        "",
        "[clock]",
        f"host = {_quote(answers['clock_host'])}",
        "",
        "[edge]",
        f"device_id = {_quote(answers['device_id'])}",
        f"board = {_quote(answers['board'])}",
    ]
    if answers.get("serial_port"):
        lines.append(f"serial_port = {_quote(answers['serial_port'])}")
    if analog_mode:
        lines.append("analog_mode = true")
    lines += [
        "",
        "[edge.camera]",
        f"source = {_quote(answers['camera'])}",
        "",
        "[edge.sensors]",
        f"source = {_quote(answers['sensors'])}",
        "",
    ]
    return "\n".join(lines)


def run_wizard(args: argparse.Namespace, settings: Settings) -> Path:
    out: Path = args.out
    if out.exists() and not args.force:
        raise NeurolakeError(f"{out} exists; pass --force to overwrite it")
    interactive = not args.yes and sys.stdin.isatty()
    answers: dict[str, str] = {}
    for attribute, prompt, default in QUESTIONS:
        given = getattr(args, attribute)
        value = given if given is not None else default(settings)
        if interactive and given is None:
            reply = input(f"{prompt} [{value}]: ").strip()
            value = reply or value
        answers[attribute] = value
    text = render(answers, args.analog_mode)
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=out.parent, prefix=".neurolake-", suffix=".toml")
    try:
        with os.fdopen(handle, "w") as file:
            file.write(text)
        # Validate exactly as the producer will load it; environment overrides do not apply here.
        load_settings(config_file=temp, environ={}, cwd=out.parent)
        os.replace(temp, out)
    finally:
        Path(temp).unlink(missing_ok=True)
    return out


def make_device_key(config: Path) -> tuple[DeviceKey, Path]:
    """The Pi's signing key (made once, kept in its keyring) and a registration file for the hub.

    The key is a shared secret (HMAC): the registration file must reach the hub privately (scp) and
    be deleted from the Pi once registered."""
    settings = load_settings(config_file=config, environ={}, cwd=config.parent)
    keyring = Keyring(settings.security.keyring)
    key = ensure_key(keyring, settings.edge.device_id)
    registration = config.parent / f"{key.device_id}.key.json"
    fd = os.open(registration, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(asdict(key), out, indent=1)
    return key, registration
