"""``neurolake lsl serve``: live sessions as Lab Streaming Layer outlets (streaming_jobs/lsl_out.py)."""

from __future__ import annotations

import argparse

from core.settings import Settings


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from streaming_jobs.lsl_out import serve_lsl

    return serve_lsl(settings, duration_s=args.duration)


def add_lsl_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    lsl = commands.add_parser("lsl", help="Lab Streaming Layer: publish live sessions for LSL tools")
    sub = lsl.add_subparsers(dest="lsl_command", metavar="LSL_COMMAND", required=True)
    serve = sub.add_parser("serve", help="each live session's filtered EEG and predictions as LSL outlets")
    serve.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
    serve.set_defaults(handler=_cmd_serve)
