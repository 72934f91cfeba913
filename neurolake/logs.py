"""Logging setup shared by every process neurolake starts."""

from __future__ import annotations

import logging
import sys

_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    """Log to stderr so that stdout stays clean for command output (tables, JSON)."""
    root = logging.getLogger()
    if not any(getattr(handler, "_neurolake", False) for handler in root.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(_FORMAT))
        handler._neurolake = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    root.setLevel(level)
    # librdkafka and py4j are chatty at INFO; their warnings still come through.
    for noisy in ("py4j", "urllib3", "alembic"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
