"""The live scorer: eeg.raw -> the lake's own filter/window/feature functions -> @champion -> eeg.predictions.

Kafka-native (no Spark) for sub-second latency. Per session it keeps the same
:class:`~dsp.session.SessionState` the silver/gold job keeps, so a window scored
live has the same boundaries and features as its row in ``gold.eeg_windows`` (when both start at the
session's first block).

A model per montage: each session is routed by its session record's (task, montage, rate)
(ml/montage.py) to that key's registered model, ``<mlflow.model_name>.<key>@champion``; a router
thread follows every key's alias and swaps a newly loaded model in between two polls: no restart, no
window skipped. A session whose key has no champion yet is scored by filter-bank CCA, which needs no
training (``ml.live_fallback``). Undecodable records are counted and left to bronze, which
quarantines every record of ``eeg.raw``. Bronze lands the predictions in ``gold.live_predictions``;
they are signed as the hub, like everything else the hub says about a device.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from core.settings import Settings
from core.stopping import stop_on_signals
from dsp.session import (
    Block,
    ProcessorConfig,
    SessionInfo,
    SessionState,
    block_from_record,
    info_from_session_record,
    process,
)
from infra.kafka import LiveReader
from ml.decoders import FilterBankCCA
from ml.features import FeatureLayoutError, feature_matrix
from ml.montage import ModelKey, key_for_session
from ml.serving import FeatureScorer
from schemas.catalog import EEG_RAW, PREDICTIONS
from schemas.codec import default_codec
from schemas.signing import HUB, Keyring, sign
from schemas.timebase import now_us
from streaming_jobs.bronze import validate

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    name: str
    version: str
    # A fitted sklearn estimator with predict_proba and classes_: a feature pipeline (with
    # feature_names_in_) or an SSVEP decoder of ml/decoders.py (input_kind "windows").
    model: Any

    @property
    def columns(self) -> list[str]:
        return list(getattr(self.model, "feature_names_in_", []))

    @property
    def takes_windows(self) -> bool:
        return getattr(self.model, "input_kind", "features") == "windows"

    @cached_property
    def feature_scorer(self) -> FeatureScorer:
        return FeatureScorer(self.model)


FALLBACK_NAME, FALLBACK_VERSION = "fbcca", "training-free"
# Models by key (None: a session whose record never came, scored as the plain model name's).
ModelSource = Callable[[ModelKey | None], LoadedModel | None]


def fallback_model(info: SessionInfo, key: ModelKey | None) -> LoadedModel:
    """Filter-bank CCA for a session's stimulus targets and rate: it scores from the first window,
    before any champion of the session's montage exists. Labels are the session's stimulus labels
    (what its markers, so its trained models, call the targets)."""
    targets = key.stimulus if key is not None and key.stimulus else tuple((f"{hz:g}hz", hz) for hz in info.ssvep_hz)
    decoder = FilterBankCCA(
        sample_rate_hz=info.sample_rate_hz,
        frequencies_hz=[hz for _, hz in targets],
        labels=[label for label, _ in targets],
        # Sub-bands start at the lowest target and stay under Nyquist (a 125 Hz Cyton+Daisy too).
        n_bands=3,
        n_harmonics=3,
    ).fit()
    return LoadedModel(FALLBACK_NAME, FALLBACK_VERSION, decoder)


@dataclass
class ScorerCounters:
    blocks: int = 0
    undecodable: int = 0
    windows: int = 0
    scored: int = 0
    unscored_no_model: int = 0
    unscored_layout: int = 0
    # Windows scored by the training-free fallback (their key had no champion yet).
    scored_fallback: int = 0
    # Records that decoded but could not be used (a session or block that contradicts itself).
    rejected: int = 0
    latencies_us: list[int] = field(default_factory=list)


class LiveScorer:
    """Blocks in, prediction records out; no I/O. ``models`` is asked for the current model of a
    session's key per batch; with ``fallback``, a session without one is scored by filter-bank CCA."""

    def __init__(self, config: ProcessorConfig, models: ModelSource, fallback: bool = True) -> None:
        self.config = config
        self.models = models
        self.fallback = fallback
        self.sessions: dict[str, SessionState] = {}
        self.infos: dict[str, SessionInfo] = {}
        self.keys: dict[str, ModelKey] = {}
        self.counters = ScorerCounters()
        self._seq: dict[str, int] = {}
        self._layout_warned: set[tuple[str, str]] = set()
        self._fallbacks: dict[str, LoadedModel] = {}

    def on_session(self, record: dict[str, Any]) -> None:
        session_id = record["session_id"]
        self.infos[session_id] = info_from_session_record(record, self.config)
        self.keys[session_id] = key_for_session(record)
        self._fallbacks.pop(session_id, None)

    def model_for(self, session_id: str) -> LoadedModel | None:
        """The session's champion, else (with ``fallback``) its training-free decoder, else None."""
        loaded = self.models(self.keys.get(session_id))
        if loaded is not None or not self.fallback:
            return loaded
        fallback = self._fallbacks.get(session_id)
        if fallback is None:
            state = self.sessions.get(session_id)
            info = state.info if state is not None and state.info is not None else self.infos.get(session_id)
            if info is None:
                return None
            fallback = self._fallbacks[session_id] = fallback_model(info, self.keys.get(session_id))
        return fallback

    def on_blocks(
        self, session_id: str, blocks: list[Block], arrival_us: int, arrival_monotonic_ns: int | None = None
    ) -> list[dict[str, Any]]:
        """Advance the session with its new blocks; predictions for the windows they complete. The
        scorer's own latency is measured on the monotonic clock when ``arrival_monotonic_ns`` is given
        (the wall clock may be stepped while it runs)."""
        self.counters.blocks += len(blocks)
        state = self.sessions.get(session_id)
        if state is None and not blocks:
            return []
        if state is None:
            # Joining a running session: start at the first block seen, not at sample 0.
            state = SessionState(next_index=min(b.first_sample_index for b in blocks))
        # The model first: the session processor then computes only what it reads (features or
        # the filtered signal) and no heart rate (that is the lake's).
        loaded = self.model_for(session_id)
        output, state = process(
            state,
            blocks,
            arrival_us // 1000,
            self.config,
            self.infos.get(session_id),
            window_samples=loaded is not None and loaded.takes_windows,
            window_features=loaded is not None and not loaded.takes_windows,
            heart_rate=False,
            window_quality=False,
        )
        self.sessions[session_id] = state
        self.counters.rejected += len(output.rejected)
        if not output.windows:
            return []
        self.counters.windows += len(output.windows)
        if loaded is None:
            self.counters.unscored_no_model += len(output.windows)
            return []
        windows = output.windows
        try:
            predict = self._predictor(loaded, windows, state)
        except FeatureLayoutError as exc:
            self.counters.unscored_layout += len(windows)
            if (session_id, loaded.version) not in self._layout_warned:
                self._layout_warned.add((session_id, loaded.version))
                log.error(
                    "session %s cannot be scored by %s version %s: %s (retrain on this layout)",
                    session_id,
                    loaded.name,
                    loaded.version,
                    exc,
                )
            return []
        probabilities = predict()
        classes = [str(c) for c in loaded.model.classes_]
        scored_us = now_us()
        predictions = []
        for window, row in zip(windows, probabilities):
            device = window["device_id"]
            self._seq[device] = self._seq.get(device, -1) + 1
            latency = (
                scored_us - arrival_us
                if arrival_monotonic_ns is None
                else (time.monotonic_ns() - arrival_monotonic_ns) // 1000
            )
            self.counters.latencies_us.append(latency)
            predictions.append(
                {
                    "device_id": device,
                    "session_id": session_id,
                    "seq": self._seq[device],
                    "window_start_index": int(window["window_start_index"]),
                    "window_end_index": int(window["window_end_index"]),
                    "window_end_us": int(window["window_end_us"]),
                    "label": classes[int(np.argmax(row))],
                    "probabilities": {c: float(p) for c, p in zip(classes, row)},
                    "model_name": loaded.name,
                    "model_version": loaded.version,
                    "scored_us": scored_us,
                    "latency_us": latency,
                }
            )
        self.counters.scored += len(predictions)
        if loaded.name == FALLBACK_NAME:
            self.counters.scored_fallback += len(predictions)
        self.counters.latencies_us = self.counters.latencies_us[-10_000:]
        return predictions

    @staticmethod
    def _predictor(loaded: LoadedModel, windows: list[dict[str, Any]], state: SessionState) -> Callable[[], Any]:
        """The model on what it reads: the occipital channels' filtered windows for a decoder
        (windows x samples x channels), the lake's feature columns for a feature pipeline. A
        feature layout the model was not trained on raises FeatureLayoutError here, before scoring."""
        if loaded.takes_windows:
            stack = np.stack([w["eeg"] for w in windows])
            info = state.info
            if info is not None:
                # Columns of the EEG-only window that are occipital (as the lake's SSVEP features use).
                eeg = info.eeg_columns.tolist()
                occipital = [eeg.index(c) for c in info.occipital_columns if c in eeg]
                stack = stack[:, :, occipital] if occipital else stack
            return lambda: loaded.model.predict_proba(stack)
        matrix, columns = feature_matrix(
            [w["band_power"] for w in windows],
            [w["ssvep_hz"] for w in windows],
            [w["ssvep_score"] for w in windows],
        )
        scorer = loaded.feature_scorer
        scorer.check(columns)
        return lambda: scorer.predict_proba(matrix, columns)


class ChampionWatcher:
    """Follows ``models:/NAME@champion`` (NAME: ``settings.mlflow.model_name``); loads a new version
    in the background, then swaps."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._current: LoadedModel | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-watcher", daemon=True)
        self._said_no_champion = False
        self.refused_versions: set[str] = set()

    @property
    def name(self) -> str:
        return self.settings.mlflow.model_name

    def __call__(self) -> LoadedModel | None:
        return self._current

    def start(self) -> ChampionWatcher:
        self.check()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.wait(self.settings.ml.reload_interval_s):
            self.check_quietly()

    def check_quietly(self) -> None:
        try:
            self.check()
        except Exception as exc:  # a registry hiccup must not stop scoring with the loaded model
            log.warning(
                "could not check %s@champion (%s); keeping version %s",
                self.name,
                exc,
                self._current.version if self._current else None,
            )

    def check(self) -> None:
        from ml.registry import champion_version, connect, load_model
        from ml.trust import UntrustedModelError

        client = connect(self.settings)
        name = self.name
        version = champion_version(client, name)
        if version is None:
            if not self._said_no_champion:
                until = (
                    "its sessions are scored by filter-bank CCA (training-free)"
                    if self.settings.ml.live_fallback == "fbcca"
                    else "windows are not scored"
                )
                log.warning(
                    "no %s@champion yet: %s until one is promoted (`neurolake train`); checking every %.0f s",
                    name,
                    until,
                    self.settings.ml.reload_interval_s,
                )
                self._said_no_champion = True
            return
        if (self._current is not None and self._current.version == version) or version in self.refused_versions:
            return
        try:
            loaded = LoadedModel(name, version, load_model(self.settings, version))
        except UntrustedModelError as exc:
            self.refused_versions.add(version)
            log.error(
                "refusing %s@champion version %s: %s; still scoring with %s",
                name,
                version,
                exc,
                f"version {self._current.version}" if self._current else "no model",
            )
            return
        previous = self._current
        self._current = loaded  # one reference swap: the scoring loop sees old or new, never neither
        self._said_no_champion = False
        log.info("scoring with %s version %s%s", name, version, f" (was {previous.version})" if previous else "")


class ChampionRouter:
    """A model per montage: one :class:`ChampionWatcher` per (task, montage, rate) seen, on the
    key's registered model; one thread checks them all. Asking for a key never waits for MLflow: a
    key seen for the first time has no model until the thread has looked (at once, not at the next
    interval)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._watchers: dict[ModelKey | None, ChampionWatcher] = {}
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name="champion-router", daemon=True)

    def __call__(self, key: ModelKey | None) -> LoadedModel | None:
        watcher = self._watchers.get(key)
        if watcher is None:
            from ml.registry import keyed_settings

            watcher = ChampionWatcher(keyed_settings(self.settings, key))
            self._watchers = {**self._watchers, key: watcher}  # one swap: the thread iterates a snapshot
            log.info("new montage %s: following %s@champion", key, watcher.name)
            self._wake.set()
            return None
        return watcher()

    def loaded(self) -> dict[str, str]:
        """Registered model -> the version scoring its sessions."""
        return {w.name: current.version for w in self._watchers.values() if (current := w()) is not None}

    def start(self) -> ChampionRouter:
        log.info(
            "live scorer: each session is scored by %s.<task>.<montage>.<rate>@champion of its own "
            "(task, montage, rate)%s",
            self.settings.mlflow.model_name,
            "; without one yet, by filter-bank CCA (training-free)"
            if self.settings.ml.live_fallback == "fbcca"
            else "",
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        while not self._stop.is_set():
            for watcher in list(self._watchers.values()):
                if self._stop.is_set():
                    return
                watcher.check_quietly()
            self._wake.wait(self.settings.ml.reload_interval_s)
            self._wake.clear()


class PredictionPublisher:
    """Publishes prediction records on eeg.predictions (keyed by device). With
    ``security.require_signed_records`` each is signed as the hub with the key of the device it
    scores, so that bronze lands in ``gold.live_predictions`` only what the hub's scorer said."""

    def __init__(self, settings: Settings, producer: Any) -> None:
        self.producer = producer
        self.codec = default_codec()
        self.keyring = Keyring(settings.security.keyring) if settings.security.require_signed_records else None
        self._keyless: set[str] = set()

    def __call__(self, prediction: dict[str, Any]) -> None:
        device = prediction["device_id"]
        value = self.codec.encode("prediction", prediction)
        if self.keyring is not None:
            key = self.keyring.active_key(device)
            if key is None:
                self.keyring.reload()  # a device registered since (a stat; read only if it changed)
                key = self.keyring.active_key(device)
            if key is not None:
                value = sign(value, PREDICTIONS, key, HUB)
            elif device not in self._keyless:
                self._keyless.add(device)
                log.warning(
                    "no active key for %s: its predictions go out unsigned and the lake quarantines them",
                    device,
                )
        self.producer.produce(PREDICTIONS, key=device.encode(), value=value)


def live_config(settings: Settings) -> ProcessorConfig:
    from streaming_jobs.silver_gold import processor_config

    return replace(processor_config(settings), gap_wait_ms=int(settings.ml.live_gap_wait_s * 1000))


def _percentile(values: list[int], q: float) -> float:
    return float(np.percentile(values, q)) / 1000 if values else float("nan")


def run_live_scorer(
    settings: Settings,
    duration_s: float | None = None,
    start: str | None = None,
    models: ModelSource | None = None,
) -> int:
    """Consume, score and publish until SIGTERM/SIGINT or ``duration_s``; exit code 0."""
    from confluent_kafka import Producer

    start = start or settings.ml.live_start
    router = ChampionRouter(settings).start() if models is None else None
    source: ModelSource = models if models is not None else router  # type: ignore[assignment]
    scorer = LiveScorer(live_config(settings), source, fallback=settings.ml.live_fallback == "fbcca")
    producer = Producer(
        {
            **settings.kafka.producer_config(),
            "linger.ms": 0,
            "logger": logging.getLogger("streaming_jobs.rdkafka.scorer"),
        }
    )
    reader = LiveReader(
        settings, "neurolake-live-scorer", (EEG_RAW,), start, logger_name="streaming_jobs.rdkafka.scorer"
    )
    publish = PredictionPublisher(settings, producer)
    with stop_on_signals() as stop, reader:
        try:
            return _score_until_stopped(reader, scorer, producer, publish, stop, duration_s)
        finally:
            if router is not None:
                router.stop()
            producer.flush(10)


def _score_until_stopped(
    reader: LiveReader,
    scorer: LiveScorer,
    producer: Any,
    publish: Callable[[dict[str, Any]], None],
    stop: threading.Event,
    duration_s: float | None,
) -> int:
    missing = reader.assign()
    if missing:
        log.error("topics %s do not exist; start the stack with `neurolake up`", ", ".join(missing))
        return 2
    log.info("live scorer reading %s from the %s offsets, publishing to %s", EEG_RAW, reader.start, PREDICTIONS)
    deadline = time.monotonic() + duration_s if duration_s else None
    next_report = time.monotonic() + 10
    while not stop.is_set() and (deadline is None or time.monotonic() < deadline):
        arrived = reader.read(500, timeout_s=0.05)
        arrival, arrival_monotonic = now_us(), time.monotonic_ns()
        scorer.counters.undecodable = reader.undecodable + reader.unauthenticated
        blocks: dict[str, list[Block]] = {}
        for item in arrived:
            record_type, record = item.record_type, item.record
            try:
                if record_type == "session":
                    scorer.on_session(record)
                elif record_type == "eeg_block" and validate(record_type, record) is None:
                    blocks.setdefault(record["session_id"], []).append(block_from_record(record))
                else:
                    scorer.counters.rejected += 1
            except Exception as exc:  # one bad record must not stop live scoring
                scorer.counters.rejected += 1
                log.warning("live scorer: %s record refused: %s", record_type, exc)
        if not blocks:
            # Sessions waiting out a gap, or for their session record, move on with time.
            arrival, arrival_monotonic = now_us(), time.monotonic_ns()
            blocks = {s: [] for s, st in scorer.sessions.items() if st.pending}
        for session_id, session_blocks in blocks.items():
            try:
                predictions = scorer.on_blocks(session_id, session_blocks, arrival, arrival_monotonic)
            except Exception:  # a session that breaks the processor is dropped, the rest go on
                scorer.counters.rejected += len(session_blocks)
                scorer.sessions.pop(session_id, None)
                log.exception("live scorer: session %s failed; its state is reset", session_id)
                continue
            for prediction in predictions:
                publish(prediction)
        producer.poll(0)
        if time.monotonic() >= next_report:
            next_report = time.monotonic() + 10
            c = scorer.counters
            loaded = getattr(scorer.models, "loaded", dict)()
            log.info(
                "live scorer: %d blocks, %d windows, %d scored (%d by the training-free fallback; champions: %s), "
                "latency p50 %.1f ms p95 %.1f ms; unscored: %d without a model, %d wrong layout; "
                "%d undecodable, %d rejected",
                c.blocks,
                c.windows,
                c.scored,
                c.scored_fallback,
                ", ".join(f"{n} v{v}" for n, v in sorted(loaded.items())) or "none",
                _percentile(c.latencies_us, 50),
                _percentile(c.latencies_us, 95),
                c.unscored_no_model,
                c.unscored_layout,
                c.undecodable,
                c.rejected,
            )
    return 0
