"""`neurolake edge ...`: run a Pi's producers, simulate many Pis, or write a Pi's config."""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

from core.errors import NeurolakeError
from core.settings import EdgeSettings, Settings
from core.stopping import stop_on_signals
from schemas.signing import Keyring, ensure_key

log = logging.getLogger(__name__)


def add_edge_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    edge = commands.add_parser("edge", help="edge producers (run on each Raspberry Pi)")
    sub = edge.add_subparsers(dest="edge_command", metavar="EDGE_COMMAND", required=True)

    run = sub.add_parser("run", help="run this Pi's devices from its settings ([edge] section)")
    run.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    run.set_defaults(handler=cmd_run)

    sim = sub.add_parser("simulate", help="N simulated lab headsets (Pis) publishing to Kafka")
    sim.add_argument("--headsets", type=int, default=1)
    sim.add_argument("--duration", type=float, default=None, help="seconds to run (default: until SIGINT/SIGTERM)")
    sim.add_argument("--stimulus", action="store_true", help="run the SSVEP stimulus protocol")
    sim.add_argument("--camera", action="store_true", help="also send test-pattern camera frames")
    sim.add_argument("--sensors", action="store_true", help="also send simulated room sensors")
    sim.add_argument("--processes", type=int, default=1, help="spread headsets over processes")
    sim.add_argument("--prefix", default="sim", help="device id prefix (ids: PREFIX-000, ...)")
    sim.add_argument("--first-index", type=int, default=0, help=argparse.SUPPRESS)
    sim.add_argument("--summary", type=Path, default=None, help="also write the JSON summary here")
    sim.set_defaults(handler=cmd_simulate)

    setup = sub.add_parser("setup", help="write this Pi's neurolake.toml (wizard, or flags + --yes)")
    setup.add_argument("--out", type=Path, default=Path("neurolake.toml"))
    setup.add_argument("--device-id")
    setup.add_argument("--board", choices=["simulated", "synthetic", "playback", "cyton", "cyton_daisy", "ganglion"])
    setup.add_argument("--serial-port")
    setup.add_argument("--bootstrap-servers")
    setup.add_argument("--clock-host")
    setup.add_argument("--camera", choices=["none", "picamera2", "test_pattern"])
    setup.add_argument("--sensors", choices=["none", "sense_hat", "simulated"])
    setup.add_argument("--analog-mode", action="store_true", help="Cyton pulse sensor on AUX rows")
    setup.add_argument("--yes", action="store_true", help="no questions: flags and defaults only")
    setup.add_argument("--force", action="store_true", help="overwrite an existing file")
    setup.set_defaults(handler=cmd_setup)


def add_stimulus_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    stimulus = commands.add_parser("stimulus", help="the visual stimulus (runs on the machine driving its monitor)")
    sub = stimulus.add_subparsers(dest="stimulus_command", metavar="STIMULUS_COMMAND", required=True)
    serve = sub.add_parser(
        "serve",
        help="this Pi's devices with the stimulus page: open its URL full screen on the stimulus monitor; "
        "markers are stamped from the frames it draws",
    )
    serve.add_argument(
        "--layout",
        choices=["classes", "benchmark40"],
        default=None,
        help="the lab's classes (edge.stimulus.classes) or the 40-target benchmark grid (default: edge.stimulus.layout)",
    )
    serve.add_argument("--port", type=int, default=None, help="default: edge.stimulus.presenter_port (15010)")
    serve.add_argument("--duration", type=float, default=None, help="seconds (default: until stopped)")
    serve.set_defaults(handler=cmd_stimulus_serve)


def cmd_stimulus_serve(args: argparse.Namespace, settings: Settings) -> int:
    if args.duration is not None and args.duration <= 0:
        raise NeurolakeError("--duration must be > 0 seconds")
    if args.port is not None and not 0 < args.port < 65536:
        raise NeurolakeError(f"--port {args.port} is not a TCP port (1-65535)")
    update: dict[str, Any] = {"enabled": True, "presenter": True}
    if args.layout:
        update["layout"] = args.layout
    if args.port:
        update["presenter_port"] = args.port
    edge = settings.edge.model_copy(update={"stimulus": settings.edge.stimulus.model_copy(update=update)})
    summary = _run_runtime(settings, [edge], args.duration)
    print(json.dumps(summary, indent=2))
    return 0


def _run_runtime(settings: Settings, devices: list[EdgeSettings], duration: float | None) -> dict[str, Any]:
    from edge_producers.runtime import EdgeRuntime

    with stop_on_signals("the edge runtime") as stop:
        runtime = EdgeRuntime(settings, devices)
        with runtime:
            runtime.run(duration_s=duration, stop=stop)
        return runtime.summary()


def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    summary = _run_runtime(settings, [settings.edge], args.duration)
    print(json.dumps(summary, indent=2))
    return 0


def simulated_devices(
    settings: Settings, count: int, first_index: int, prefix: str, stimulus: bool, camera: bool, sensors: bool
) -> list[EdgeSettings]:
    base = settings.edge
    devices = []
    for index in range(first_index, first_index + count):
        devices.append(
            base.model_copy(
                update={
                    "device_id": f"{prefix}-{index:03d}",
                    "board": "simulated",
                    "simulation": base.simulation.model_copy(update={"seed": base.simulation.seed + index}),
                    # Simulated Pis keep the timetable: one stimulus monitor serves one real device.
                    "stimulus": base.stimulus.model_copy(
                        update={
                            "enabled": stimulus or base.stimulus.enabled,
                            "seed": base.stimulus.seed + index,
                            "presenter": False,
                        }
                    ),
                    "camera": base.camera.model_copy(
                        update={"source": "test_pattern" if camera else base.camera.source}
                    ),
                    "sensors": base.sensors.model_copy(
                        update={"source": "simulated" if sensors else base.sensors.source}
                    ),
                }
            )
        )
    return devices


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    if args.headsets < 1 or args.processes < 1:
        raise NeurolakeError("--headsets and --processes must be at least 1")
    if args.duration is not None and args.duration <= 0:
        raise NeurolakeError("--duration must be > 0 seconds")
    devices = simulated_devices(
        settings, args.headsets, args.first_index, args.prefix, args.stimulus, args.camera, args.sensors
    )
    # Simulated headsets run on the hub: their keys go straight into the hub's keyring (made here,
    # before any child process starts, so that no two processes write the keyring at once).
    keyring = Keyring(settings.security.keyring)
    for device in devices:
        ensure_key(keyring, device.device_id)
    if args.processes == 1:
        summary = _run_runtime(settings, devices, args.duration)
    else:
        summary = _simulate_in_processes(args)
    text = json.dumps(summary, indent=2)
    if args.summary:
        args.summary.write_text(text)
    print(text)
    return 0


def _simulate_in_processes(args: argparse.Namespace) -> dict[str, Any]:
    per, extra = divmod(args.headsets, args.processes)
    children, first = [], args.first_index
    for index in range(args.processes):
        count = per + (1 if index < extra else 0)
        if count == 0:
            continue
        argv = [sys.executable, "-m", "neurolake.cli"]
        if args.config:
            argv += ["--config", str(args.config)]
        argv += ["edge", "simulate", "--headsets", str(count), "--prefix", args.prefix, "--first-index", str(first)]
        if args.duration is not None:
            argv += ["--duration", str(args.duration)]
        argv += [
            flag
            for flag, on in (("--stimulus", args.stimulus), ("--camera", args.camera), ("--sensors", args.sensors))
            if on
        ]
        children.append(subprocess.Popen(argv, stdout=subprocess.PIPE, text=True))
        first += count
    merged: dict[str, Any] = {"devices": [], "processes": []}
    failed = 0

    def forward(signum: int) -> None:
        for child in children:
            child.send_signal(signum)

    with stop_on_signals(on_signal=forward):
        outputs = [child.communicate()[0] for child in children]
    for child, out in zip(children, outputs):
        if child.returncode != 0:
            failed += 1
            continue
        part = json.loads(out)
        merged["devices"] += part.pop("devices")
        merged["processes"].append(part)
    if failed:
        raise NeurolakeError(f"{failed} of {len(children)} simulator processes failed; see their logs")
    return merged


def cmd_setup(args: argparse.Namespace, settings: Settings) -> int:
    from edge_producers.setup_wizard import make_device_key, run_wizard

    path = run_wizard(args, settings)
    key, registration = make_device_key(path)
    print(
        f"wrote {path}; device key {key.key_id} is in this Pi's keyring.\n"
        f"Register it on the hub: copy {registration} there privately (it holds the secret), run "
        f"`neurolake keys register {registration.name}`, then delete it on both machines.\n"
        f"Then start the producers with: neurolake --config {path} edge run"
    )
    return 0
