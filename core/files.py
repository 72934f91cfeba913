"""Files that other processes read while we rewrite them: a reader sees the old content or the new,
never a truncated one (``Path.write_text`` truncates first, and a reader in between gets nothing)."""

from __future__ import annotations

import os
import threading
from pathlib import Path


def replace_file(path: Path, data: bytes | str) -> None:
    """Write ``data`` beside ``path`` under a name unique to this process and thread, then rename it
    over ``path`` (atomic on one filesystem)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        partial.write_bytes(data.encode() if isinstance(data, str) else data)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
