"""`neurolake edge setup`: ask (or take from flags) a Pi's settings and write its neurolake.toml.

The file is validated with the same loader the producers use before it is written, so a Pi never
boots with a config that would be refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

from neurolake.errors import NeurolakeError
from neurolake.settings import Settings, load_settings

QUESTIONS = (
    # (flag attribute, prompt, default from current settings)
    ("device_id", "Device id of this Pi", lambda s: s.edge.device_id),
    ("board", "EEG board (simulated, synthetic, playback, cyton, cyton_daisy, ganglion)",
     lambda s: s.edge.board),
    ("serial_port", "Serial port of the OpenBCI dongle (blank if none)",
     lambda s: s.edge.serial_port or ""),
    ("bootstrap_servers", "Kafka bootstrap servers on the hub", lambda s: s.kafka.bootstrap_servers),
    ("clock_host", "Hub address for clock probes", lambda s: s.clock.host),
    ("camera", "Camera (none, picamera2, test_pattern)", lambda s: s.edge.camera.source),
    ("sensors", "Room sensors (none, sense_hat, simulated)", lambda s: s.edge.sensors.source),
)


def _quote(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def render(answers: dict[str, str], analog_mode: bool) -> str:
    lines = [
        "# Written by `neurolake edge setup`. Every key is documented in neurolake/settings.py.",
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
