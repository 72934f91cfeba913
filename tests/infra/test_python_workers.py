"""The heap freeze that spares Spark's reused Python workers a full walk of their imports after every
task, and the stream's task functions calling it first."""

from __future__ import annotations

import gc
import sys
import types
import weakref
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dsp.session import ProcessorConfig
from infra.python_workers import HeapFreezer
from schemas.signing import Keyring
from streaming_jobs import bronze, silver_gold


@pytest.fixture
def thawed() -> Iterator[None]:
    """The test process's heap thawed afterwards, whatever the test froze."""
    try:
        yield
    finally:
        gc.unfreeze()


@pytest.mark.usefixtures("thawed")
def test_a_worker_freezes_what_its_imports_made_and_again_only_after_new_imports(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    freeze = HeapFreezer()
    assert freeze()
    frozen = gc.get_freeze_count()
    # The modules' objects leave what every later collection walks.
    assert frozen > 10_000
    assert len(gc.get_objects()) < frozen // 10
    assert not freeze()
    # Not frozen again: that would add what was made since. A frozen object freed meanwhile (another
    # thread of the test process dropping its last reference) lowers the count by itself.
    assert gc.get_freeze_count() <= frozen
    monkeypatch.setitem(sys.modules, "neurolake_test_later_import", types.ModuleType("neurolake_test_later_import"))
    assert freeze()


@pytest.mark.usefixtures("thawed")
def test_a_frozen_object_is_still_freed_when_its_last_reference_goes() -> None:
    class Held:
        pass

    held = Held()
    gone = weakref.ref(held)
    gc.freeze()
    del held
    assert gone() is None


class TimedOut:
    """A group state whose session timed out with nothing stored (Spark's GroupState, in part)."""

    hasTimedOut = True
    exists = False

    def getCurrentProcessingTimeMs(self) -> int:
        return 0

    def update(self, value: tuple[Any, ...]) -> None:
        pass

    def setTimeoutDuration(self, duration_ms: int) -> None:
        pass


TASKS: dict[str, Callable[[Path], Iterator[Any]]] = {
    "bronze": lambda lake: bronze.bronze_task(
        str(lake), bronze.DecodeContext(Keyring(lake / "keys"), {}, 0), None, iter([])
    ),
    "silver/gold step": lambda lake: silver_gold.process_sessions(
        silver_gold.StreamContext(ProcessorConfig(), str(lake)), (0,), iter([]), TimedOut()
    ),
    "silver/gold step by session": lambda lake: silver_gold.process_session(
        silver_gold.StreamContext(ProcessorConfig(), str(lake)), ("a-session",), iter([]), TimedOut()
    ),
    "silver/gold write": lambda lake: silver_gold.write_task(0, str(lake), frozenset(), iter([])),
    "rebuild unpack": lambda lake: silver_gold.unpack_task("silver.eeg_samples", 0, str(lake), iter([])),
}


@pytest.mark.parametrize("name", list(TASKS))
def test_the_streams_task_functions_freeze_first(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str) -> None:
    calls: list[bool] = []
    for module in (bronze, silver_gold):
        monkeypatch.setattr(module, "freeze_long_lived_objects", lambda: calls.append(True) or True)
    list(TASKS[name](tmp_path))
    assert calls
