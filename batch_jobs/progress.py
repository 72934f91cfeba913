"""Progress bars for long batch work (import, replay, export, backfill): on stderr, only when it is
a terminal, so logs and piped output stay clean."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager


@contextmanager
def progress_bar(total: int | None, desc: str, unit: str = "sample") -> Iterator[Callable[[int], None]]:
    """Yields ``advance(n)``."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=None,
        mininterval=0.5,
        dynamic_ncols=True,
        leave=True,
    )
    try:
        yield lambda n: bar.update(n)
    finally:
        bar.close()
