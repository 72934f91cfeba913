"""``neurolake sessions | tables | import | replay | export``: the lake for the people who use it."""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
from pathlib import Path
from typing import Any

from core.settings import Settings

log = logging.getLogger(__name__)


def _time(us: int | None) -> str:
    return "-" if us is None else dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat(timespec="seconds")


def _cmd_sessions(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.recording import list_sessions

    rows = list_sessions(settings.paths.lake_root)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print(
            f"no sessions in {settings.paths.lake_root} yet (stream some with `neurolake demo`, or "
            "`neurolake import FILE`)"
        )
        return 0
    print(
        f"{'session':<36} {'device':<20} {'subject':<10} {'started (UTC)':<25} {'Hz':>6} {'ch':>3} "
        f"{'seconds':>8} {'markers':>7}"
    )
    for r in rows:
        print(
            f"{r['session_id']:<36} {r['device_id']:<20} {r['subject_id'] or '-':<10} "
            f"{_time(r['started_us']):<25} {r['sample_rate_hz']:>6g} {r['channels']:>3} "
            f"{r['duration_s']:>8.1f} {r['markers']:>7}"
        )
    return 0


def _cmd_tables(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.lake_tables import TableError, discover_tables, summarize

    root = settings.paths.lake_root
    names = args.names or list(discover_tables(root))
    if not names:
        raise TableError(f"no Delta tables under {root} (paths.lake_root) yet")
    if args.history:
        from neurolake.lake import history

        for name in names:
            commits = history(name, lake_root=root)
            if args.json:
                print(json.dumps({name: commits}, indent=2))
                continue
            print(f"{name}")
            for c in commits:
                print(
                    f"  v{c['version']:<5} {c['time']}  {c['operation']:<18} rows+{c['rows_added'] or 0:<8} "
                    f"batch {c['batch_id'] or '-'}"
                )
        return 0
    summaries = [summarize(root, name) for name in names]
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **s.__dict__,
                        "path": str(s.path),
                        "columns": [dict(zip(("name", "type", "description"), c)) for c in s.columns],
                    }
                    for s in summaries
                ],
                indent=2,
            )
        )
        return 0
    if not args.describe:
        print(f"{'table':<24} {'version':>7} {'rows':>10} {'files':>6} {'MiB':>8}  last commit (UTC)")
        for s in summaries:
            print(
                f"{s.name:<24} {s.version:>7} {s.rows:>10} {s.files:>6} {s.bytes / 2**20:>8.2f}  "
                f"{s.last_commit} {s.last_operation}"
            )
        return 0
    print(render_dictionary(summaries))
    return 0


def render_dictionary(summaries: list[Any]) -> str:
    """The data dictionary as Markdown (readable as text, pastes into a wiki)."""
    lines = ["# neurolake data dictionary", ""]
    for s in summaries:
        lines += [
            f"## {s.name}",
            "",
            f"Delta version {s.version}, {s.rows} rows in {s.files} files ({s.bytes / 2**20:.2f} MiB), "
            f"partitioned by {', '.join(s.partition_columns) or 'nothing'}; last commit {s.last_commit} "
            f"({s.last_operation}). Path: `{s.path}`.",
            "",
            "| column | type | description |",
            "| --- | --- | --- |",
        ]
        lines += [f"| {name} | `{kind}` | {doc} |" for name, kind, doc in s.columns]
        lines.append("")
    return "\n".join(lines).rstrip()


def channel_report(metadata: dict[str, str]) -> str:
    """What an import did to the channel labels (kept in the session's metadata), for people."""
    renamed = json.loads(metadata.get("channel_renames") or "{}")
    other = json.loads(metadata.get("channels_not_standard") or "[]")
    parts = []
    if renamed:
        parts.append("renamed " + ", ".join(f"{a} -> {b}" for a, b in renamed.items()))
    if other:
        parts.append("not standard electrode names, kept: " + ", ".join(other))
    return "; ".join(parts) or "every EEG channel already has its standard name"


def _import_options(args: argparse.Namespace) -> Any:
    from batch_jobs.importers import ImportOptions

    channels = tuple(c.strip() for c in args.channels.split(",") if c.strip()) if args.channels else ()
    return ImportOptions(
        subject=args.subject,
        task=args.task,
        session_id=args.session,
        device_id=args.device,
        board=args.board,
        channels=channels,
        montage=args.montage,
        stream=args.stream,
    )


def _cmd_import(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.importers import read_recording
    from batch_jobs.progress import progress_bar
    from batch_jobs.recording import list_sessions, write_session
    from streaming_jobs.silver_gold import processor_config

    recording = read_recording(args.file, args.format, _import_options(args))
    print(
        f"read {args.file.name}: {recording.n_samples} samples x {len(recording.channel_names)} channels at "
        f"{recording.sample_rate_hz:g} Hz ({recording.duration_s:.1f} s), {len(recording.markers)} markers; "
        f"session {recording.session_id}"
    )
    print(f"channels: {channel_report(recording.session['metadata'])}")
    if args.replay:
        from batch_jobs.replay import publish

        with progress_bar(recording.n_samples, f"replay x{args.speed:g}") as advance:
            result = publish(settings, recording, speed=args.speed, progress=advance)
        print(
            f"published {result.blocks} blocks and {result.markers} markers to Kafka in {result.seconds:.1f} s "
            f"as session {result.session_id}"
        )
        return 0
    if any(s["session_id"] == recording.session_id for s in list_sessions(settings.paths.lake_root)):
        print(
            f"session {recording.session_id} is already in the lake; nothing written "
            "(give --session NAME to import the file again as another session)"
        )
        return 0
    from infra.spark import build_spark_session

    log.info("writing session %s to bronze, then silver and gold through Spark", recording.session_id)
    counts = write_session(
        settings.paths.lake_root,
        recording,
        processor_config(settings),
        lambda: build_spark_session(settings, "neurolake-import"),
    )
    print(
        f"imported session {recording.session_id}: {counts['blocks']} blocks to bronze, {counts['samples']} "
        f"samples to silver.eeg_samples, {counts['windows']} windows to gold.eeg_windows, "
        f"{counts['markers']} markers"
    )
    return 0


def _cmd_lake_rebuild(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.progress import progress_bar
    from batch_jobs.rebuild import rebuild
    from infra.spark import build_spark_session
    from streaming_jobs.jobs import checkpoint_dir
    from streaming_jobs.silver_gold import processor_config

    config = processor_config(settings)
    spark = build_spark_session(settings, "neurolake-rebuild")
    try:
        with progress_bar(None, f"rebuild {args.target}", unit="session") as advance:
            shown = [0]

            def progress(done: int, _total: int) -> None:
                advance(done - shown[0])
                shown[0] = done

            report = rebuild(
                spark,
                settings.paths.lake_root,
                checkpoint_dir(settings, "silver_gold"),
                config,
                args.target,
                args.sessions or None,
                force=args.force,
                progress=progress,
            )
    finally:
        spark.stop()
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
        return 0
    rows = ", ".join(f"{n:,} rows to {table}" for table, n in sorted(report.rows.items())) or "nothing"
    print(
        f"rebuilt {len(report.rebuilt)} session(s) with settings {config.fingerprint}: {rows}; "
        f"{len(report.up_to_date)} already up to date; {report.late_blocks_included} late block(s) included"
    )
    return 0


def _cmd_replay(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.progress import progress_bar
    from batch_jobs.recording import read_session
    from batch_jobs.replay import as_new_session, publish

    recording = as_new_session(
        read_session(settings.paths.lake_root, args.session), session_id=args.as_session, device_id=args.device
    )
    print(
        f"replaying {args.session} ({recording.duration_s:.1f} s) at x{args.speed:g} as session "
        f"{recording.session_id} of device {recording.device_id}",
        flush=True,
    )
    with progress_bar(recording.n_samples, f"replay x{args.speed:g}") as advance:
        result = publish(settings, recording, speed=args.speed, progress=advance)
    print(f"published {result.blocks} blocks and {result.markers} markers in {result.seconds:.1f} s")
    return 0


def _cmd_export(args: argparse.Namespace, settings: Settings) -> int:
    from batch_jobs.exporters import export
    from batch_jobs.progress import progress_bar
    from batch_jobs.recording import read_session

    recording = read_session(settings.paths.lake_root, args.session)
    sensors = predictions = None
    if args.format == "xdf":  # XDF carries every stream of the session
        from infra.delta import LakeTable
        from schemas.catalog import GOLD_PREDICTIONS, SILVER_SENSOR_READINGS

        root = settings.paths.lake_root
        sensors = LakeTable(root, SILVER_SENSOR_READINGS).read_pandas()[0]
        predictions = LakeTable(root, GOLD_PREDICTIONS).read_pandas()[0]
        sensors = sensors[sensors["session_id"] == args.session] if not sensors.empty else None
        predictions = predictions[predictions["session_id"] == args.session] if not predictions.empty else None
    with progress_bar(recording.n_samples, f"export {args.format}") as advance:
        files = export(
            recording,
            args.format,
            args.out,
            line_freq_hz=settings.lake.notch_hz,
            progress=advance,
            sensors=sensors,
            predictions=predictions,
        )
    print(f"exported {args.session} ({recording.duration_s:.1f} s, {len(recording.markers)} markers) to {args.out}:")
    for path in files:
        print(f"  {path.relative_to(args.out)}")
    return 0


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text}: no such file")
    return path


def add_access_commands(commands: Any) -> None:
    from batch_jobs.formats import EXPORT_FORMATS, IMPORT_FORMATS

    sessions = commands.add_parser("sessions", help="the sessions in the lake (recorded or imported)")
    sessions.add_argument("--json", action="store_true")
    sessions.set_defaults(handler=_cmd_sessions)

    tables = commands.add_parser(
        "tables",
        help="the lake's tables: versions and sizes, the data dictionary (--describe), commit history (--history)",
    )
    tables.add_argument("names", nargs="*", metavar="TABLE", help="e.g. gold.eeg_windows (default: all)")
    shown = tables.add_mutually_exclusive_group()
    shown.add_argument(
        "--describe",
        action="store_true",
        help="every column with its type and meaning (Markdown), from the Avro schemas and Delta metadata",
    )
    shown.add_argument("--history", action="store_true", help="each table's commits, newest first")
    tables.add_argument("--json", action="store_true")
    tables.set_defaults(handler=_cmd_tables)

    imp = commands.add_parser(
        "import", help="a recording file into the lake as a session (or into Kafka with --replay)"
    )
    imp.add_argument(
        "file",
        type=_existing_file,
        help="BrainFlow CSV, OpenBCI GUI .txt, .edf/.bdf (EDF+/BDF+), .gdf (BNCI Horizon), .xdf",
    )
    imp.add_argument("--format", choices=IMPORT_FORMATS, default=None, help="default: from the name/content")
    imp.add_argument("--subject", default=None, help="subject id stored with the session")
    imp.add_argument("--task", default=None, help="task name stored with the session")
    imp.add_argument("--session", default=None, help="session id (default: derived from the file)")
    imp.add_argument("--device", default=None, help="device id (default: import-<file hash>)")
    imp.add_argument(
        "--board",
        default=None,
        help="BrainFlow board that wrote the file (needed for BrainFlow CSV): synthetic, cyton, cyton_daisy, ganglion",
    )
    imp.add_argument(
        "--channels",
        default=None,
        help="comma-separated: names of the EEG columns (BrainFlow/OpenBCI) or the channels to keep (EDF/BDF/XDF)",
    )
    imp.add_argument("--montage", default="standard_1020", help="MNE standard montage of the electrodes")
    imp.add_argument("--stream", default=None, help="XDF: the EEG stream's name (default: the largest)")
    imp.add_argument(
        "--replay", action="store_true", help="publish into Kafka like a headset instead of writing the lake directly"
    )
    imp.add_argument(
        "--speed",
        type=float,
        default=1.0,
        help="with --replay: 1 real time, 10 ten times faster, 0 as fast as possible",
    )
    imp.set_defaults(handler=_cmd_import)

    replay = commands.add_parser("replay", help="a session from the lake into Kafka, like a headset")
    replay.add_argument("session", help="session id (`neurolake sessions` lists them)")
    replay.add_argument(
        "--speed", type=float, default=1.0, help="1 real time (default), 10 ten times faster, 0 as fast as possible"
    )
    replay.add_argument("--as-session", default=None, help="session id of the replay (default: SESSION~r<start ms>)")
    replay.add_argument(
        "--device",
        default=None,
        help="device id of the replay (default: DEVICE~r<start ms>); must not be a device the lake has seen",
    )
    replay.set_defaults(handler=_cmd_replay)

    lake = commands.add_parser("lake", help="lake maintenance: rebuild silver and gold from bronze")
    lake_commands = lake.add_subparsers(dest="lake_command", metavar="LAKE_COMMAND", required=True)
    rebuild = lake_commands.add_parser(
        "rebuild",
        help="re-derive silver and/or gold from bronze (after a settings change, a fix, or "
        "late blocks); sessions already made with the current settings are skipped",
    )
    rebuild.add_argument("target", nargs="?", choices=("silver", "gold", "all"), default="all")
    rebuild.add_argument(
        "--sessions",
        nargs="+",
        default=None,
        metavar="SESSION",
        help="only these sessions (default: every session in bronze)",
    )
    rebuild.add_argument("--force", action="store_true", help="rebuild even sessions that are up to date")
    rebuild.add_argument("--json", action="store_true")
    rebuild.set_defaults(handler=_cmd_lake_rebuild)

    export = commands.add_parser("export", help="a session to EDF+, BDF+, a BIDS folder or XDF")
    export.add_argument("session", help="session id (`neurolake sessions` lists them)")
    export.add_argument(
        "--format",
        choices=EXPORT_FORMATS,
        required=True,
        help="edf (16-bit), bdf (24-bit, float32-exact to the channel's range), bids (mne-bids, EDF inside), "
        "xdf (every stream: EEG, markers, sensors, predictions, with clock offsets)",
    )
    export.add_argument("--out", type=Path, required=True, help="a new or empty directory")
    export.set_defaults(handler=_cmd_export)
