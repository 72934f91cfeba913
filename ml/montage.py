"""A model per montage: which registered model serves a session, from its session record alone.

A model fits one (task, montage, rate): the stimulus targets it learnt to tell apart, the board and
the channels it was trained on (their number, names and order), and their sample rate. A Cyton (8
channels at 250 Hz) and a Cyton+Daisy (16 at 125 Hz) in one lab are two keys, so two champions:
each version lives under its key's registered model, ``<ml model name>.<task>.<montage>.<rate>``
(e.g. ``neurolake-ssvep.ssvep4-5f0c1a.simulated-16ch-9e2b47.250hz``), with the key's parts as
tags. The hashes name exact channel and stimulus sets; the tags say them in full.

Pure: no MLflow here (ml/registry.py is the adapter).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# Tags on each registered model (and version) that say which sessions it serves.
BASE_TAG = "neurolake.base_model"
TASK_TAG, MONTAGE_TAG, RATE_TAG = "neurolake.task", "neurolake.montage", "neurolake.sample_rate_hz"
BOARD_TAG, CHANNELS_TAG, STIMULUS_TAG = "neurolake.board", "neurolake.channels", "neurolake.stimulus"


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:6]


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9_-]+", "-", text.lower()).strip("-") or "unknown"


@dataclass(frozen=True)
class ModelKey:
    """(task, montage, rate) of a session, and what they were derived from."""

    task: str
    montage: str
    sample_rate_hz: float
    board: str = ""
    channels: tuple[str, ...] = ()
    stimulus: tuple[tuple[str, float], ...] = ()

    @property
    def rate(self) -> str:
        return f"{self.sample_rate_hz:g}hz".replace(".", "_")

    @property
    def slug(self) -> str:
        return f"{self.task}.{self.montage}.{self.rate}"

    def registered_name(self, base: str) -> str:
        """The registered model whose ``@champion`` serves this key."""
        return f"{base}.{self.slug}"

    def tags(self, base: str) -> dict[str, str]:
        return {
            BASE_TAG: base,
            TASK_TAG: self.task,
            MONTAGE_TAG: self.montage,
            RATE_TAG: f"{self.sample_rate_hz:g}",
            BOARD_TAG: self.board,
            CHANNELS_TAG: ",".join(self.channels),
            STIMULUS_TAG: ",".join(f"{label}={hz:g}" for label, hz in self.stimulus),
        }

    def __str__(self) -> str:
        return self.slug


def stimulus_targets(metadata: Mapping[str, Any] | None) -> tuple[tuple[str, float], ...]:
    """``(label, Hz)`` of every target a session record's metadata names (``stimulus.<label>``), in
    increasing frequency (then label) order: the classes a model of this session predicts."""
    targets = []
    for key, value in (metadata or {}).items():
        if key.startswith("stimulus."):
            targets.append((key[len("stimulus.") :], float(value)))
    return tuple(sorted(targets, key=lambda t: (t[1], t[0])))


def _sequence(value: Any) -> list[Any]:
    """A list from a record's array field: None, a list, or (a bronze row read back) a numpy array."""
    return [] if value is None else list(value)


def key_for_session(record: Mapping[str, Any]) -> ModelKey:
    """The key of a ``session`` record (decoded Avro or a bronze.sessions row)."""
    names = [str(n) for n in _sequence(record.get("channel_names"))]
    types = [str(t) for t in _sequence(record.get("channel_types"))] or ["eeg"] * len(names)
    eeg = tuple(n for n, t in zip(names, types) if t == "eeg")
    board = str(record.get("board") or "unknown")
    stimulus = stimulus_targets(record.get("metadata"))
    task = _slug(str(record.get("task") or ("ssvep" if stimulus else "eeg")))
    if stimulus:
        task = f"{task}{len(stimulus)}-{_short_hash(repr(stimulus))}"
    # Every channel, typed, in order: a model's inputs are the whole block's columns.
    montage = f"{_slug(board)}-{len(eeg)}ch-{_short_hash(repr((names, types)))}"
    return ModelKey(task, montage, float(record["sample_rate_hz"]), board, eeg, stimulus)
