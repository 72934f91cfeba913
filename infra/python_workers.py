"""What the lake's task functions do first inside Spark's Python workers.

A reused PySpark worker runs a full ``gc.collect()`` after every task (``pyspark/daemon.py``). Once
pyarrow, pandas, numpy, scipy and the lake's modules are imported, that collection walks ~135,000
objects that live as long as the worker: ~60 ms per task, three times bronze's decoding of a second of
100 headsets (``bench/python_worker_bench.py``). The lake's queries run several Python tasks a second
(bronze's decode and write, silver's stateful step and its writer): at 100 headsets the collections
took ~0.3 of the 2 cores (``bench/lake_bench.py``'s CPU line: the Python workers 1.12 -> 0.80).

``gc.freeze()`` moves every object that exists now into the permanent generation, which collections
skip. Objects made later are collected as before, and a frozen object is still freed when its last
reference goes; only a reference cycle among frozen objects waits for the worker's exit. Freezing
again only when a task imported new modules keeps that to the first few tasks of a worker.
"""

from __future__ import annotations

import gc
import sys


class HeapFreezer:
    """Freezes the process's heap when modules were imported since its last freeze."""

    def __init__(self) -> None:
        self.modules_when_frozen = 0

    def __call__(self) -> bool:
        """Call first in a task function (its first task, or one that needed a new module, freezes);
        returns whether it froze."""
        if len(sys.modules) == self.modules_when_frozen:
            return False
        gc.freeze()
        self.modules_when_frozen = len(sys.modules)
        return True


# One per worker process: the lake's task functions call it first.
freeze_long_lived_objects = HeapFreezer()
