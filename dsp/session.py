"""Per-session EEG processing for silver and gold, as a pure state-in/state-out function.

For each session: put blocks in sample order (waiting a bounded time for a resent block to fill a
gap), filter them causally with the state carried from the previous blocks, dejitter their times,
and cut windows with features. Spark runs this inside ``transformWithStateInPandas`` keyed by
session; tests and the live scorer run it directly. Same input blocks in any grouping -> same rows.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from dsp.dejitter import DejitterState, dejitter_block
from dsp.features import band_powers, ssvep_scores, window_quality
from dsp.filters import FilterSpec, LineFilter, design_sos, filter_chunk, initial_state
from dsp.heart import MIN_BEAT_INTERVAL_S, detect_beats
from dsp.packing import pack_columns, unpack_columns
from dsp.session_record import SessionRecordError, session_record_problem
from dsp.windows import WindowSpec, WindowState, initial_window_state, windows_from_chunk
from schemas.codec import eeg_block_device_times, eeg_block_samples

OCCIPITAL_PREFIXES = ("O", "PO", "P")


# The line filter's fields came after the first release: they are named in the fingerprint only
# when they shape the filter, so a lake whose filter did not change keeps its fingerprint.
_LINE_FILTER_FIELDS = ("line_filter", "notch_q", "bandstop_width_hz", "bandstop_order")
_DEFAULT_NOTCH_Q = 30.0


@dataclass(frozen=True)
class ProcessorConfig:
    band_low_hz: float = 1.0
    band_high_hz: float = 60.0
    notch_hz: float | None = 60.0
    window_s: float = 2.0
    window_overlap: float = 0.8
    gap_wait_ms: int = 30_000
    default_ssvep_hz: tuple[float, ...] = (8.0, 10.0, 12.0, 15.0)
    # The mains filter at notch_hz (dsp.filters.FilterSpec): iirnotch, or a Butterworth band-stop.
    line_filter: LineFilter = "notch"
    notch_q: float = _DEFAULT_NOTCH_Q
    bandstop_width_hz: float = 2.0
    bandstop_order: int = 2

    @cached_property
    def fingerprint(self) -> str:
        """Names the settings that shape silver and gold rows; recorded with every commit and in
        each session's state, so a rebuild knows which sessions were made with other settings."""
        return hashlib.sha256(json.dumps(self.describe(), sort_keys=True).encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        described = {k: v for k, v in asdict(self).items() if k not in _LINE_FILTER_FIELDS}
        if self.notch_hz is not None and self.line_filter == "bandstop":
            described.update(
                line_filter=self.line_filter,
                bandstop_width_hz=self.bandstop_width_hz,
                bandstop_order=self.bandstop_order,
            )
        elif self.notch_hz is not None and self.notch_q != _DEFAULT_NOTCH_Q:
            described["notch_q"] = self.notch_q
        return described

    def filter_spec(self, sample_rate_hz: float) -> FilterSpec:
        """Silver's filter for a session at ``sample_rate_hz``."""
        return FilterSpec.of(self, sample_rate_hz)


@dataclass(frozen=True)
class SessionInfo:
    device_id: str
    channel_names: tuple[str, ...]
    channel_types: tuple[str, ...]
    sample_rate_hz: float
    ssvep_hz: tuple[float, ...]

    @property
    def eeg_columns(self) -> np.ndarray:
        return np.array([i for i, t in enumerate(self.channel_types) if t == "eeg"], dtype=int)

    @property
    def pulse_column(self) -> int | None:
        return next((i for i, t in enumerate(self.channel_types) if t == "pulse"), None)

    @property
    def occipital_columns(self) -> np.ndarray:
        picked = [i for i in self.eeg_columns if self.channel_names[i].upper().startswith(OCCIPITAL_PREFIXES)]
        return np.array(picked or list(self.eeg_columns), dtype=int)


@dataclass(frozen=True)
class Block:
    device_id: str
    seq: int
    first_sample_index: int
    samples: np.ndarray  # (n, channels) float32
    device_times_us: np.ndarray  # (n,) int64
    clock_offset_us: int
    sample_rate_hz: float


def block_from_record(record: Mapping[str, Any]) -> Block:
    """An ``eeg_block`` record (decoded Avro or a bronze row) as a Block; the samples are not copied."""
    return Block(
        str(record["device_id"]),
        int(record["seq"]),
        int(record["first_sample_index"]),
        eeg_block_samples(record),
        eeg_block_device_times(record),
        int(record["clock_offset_us"]),
        float(record["sample_rate_hz"]),
    )


@dataclass
class SessionState:
    info: SessionInfo | None = None
    next_index: int = 0
    filter_zi: np.ndarray | None = None
    dejitter: DejitterState = field(default_factory=DejitterState)
    windows: WindowState | None = None
    pending: list[Block] = field(default_factory=list)
    gap_since_ms: int | None = None
    samples_lost: int = 0
    last_seq: int = -1
    # Heart rate: the last seconds of the pulse channel (index, value, lab time), beats so far.
    pulse_tail: np.ndarray | None = None
    last_beat_index: int = -1
    beat_intervals: list[int] = field(default_factory=list)
    # Sample ranges [start, end) given up as lost: a block that later falls in one is "late" (its
    # samples were never emitted); any other block below next_index was emitted already.
    skipped: tuple[tuple[int, int], ...] = ()
    # The settings (ProcessorConfig.fingerprint) that made this session's rows so far.
    fingerprints: frozenset[str] = frozenset()
    # The rebuild this state came from (None: the stream's own); the stream adopts a newer one.
    rebuild_id: str | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "pulse_tail": pack_columns(self.pulse_tail)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, pulse_tail=unpack_columns(state.get("pulse_tail")))


@dataclass(frozen=True)
class BlockNote:
    """A block the processor did not turn into rows, and why."""

    seq: int
    first_sample_index: int
    n_samples: int
    reason: str


@dataclass
class Output:
    samples: list[dict[str, Any]] = field(default_factory=list)  # one dict per run of blocks
    windows: list[dict[str, Any]] = field(default_factory=list)
    beats: list[dict[str, Any]] = field(default_factory=list)
    # Blocks that came after their gap was given up (a rebuild includes them).
    late: list[BlockNote] = field(default_factory=list)
    # Blocks that disagree with their session (channel count, rate): never processed.
    rejected: list[BlockNote] = field(default_factory=list)
    duplicates: int = 0


PULSE_TAIL_S = 4.0
BPM_AVERAGE_OVER = 5


def info_from_session_record(record: dict[str, Any], config: ProcessorConfig) -> SessionInfo:
    problem = session_record_problem(record)
    if problem is not None:
        raise SessionRecordError(problem)
    stimulus = sorted({float(v) for k, v in record.get("metadata", {}).items() if k.startswith("stimulus.")})
    return SessionInfo(
        device_id=record["device_id"],
        channel_names=tuple(record["channel_names"]),
        channel_types=tuple(record["channel_types"]),
        sample_rate_hz=float(record["sample_rate_hz"]),
        ssvep_hz=tuple(stimulus) or config.default_ssvep_hz,
    )


def fallback_info(block: Block, config: ProcessorConfig) -> SessionInfo:
    """When blocks wait too long for their session record: every channel is EEG."""
    n = block.samples.shape[1]
    return SessionInfo(
        block.device_id,
        tuple(f"ch{i + 1}" for i in range(n)),
        ("eeg",) * n,
        block.sample_rate_hz,
        config.default_ssvep_hz,
    )


def process(
    state: SessionState,
    blocks: list[Block],
    now_ms: int,
    config: ProcessorConfig,
    session_info: SessionInfo | None = None,
    window_samples: bool = False,
    window_features: bool = True,
    heart_rate: bool = True,
    window_quality: bool = True,
) -> tuple[Output, SessionState]:
    """Take new blocks (any order, duplicates allowed); return the rows they complete.

    What a reader that is not the lake may leave out (the live scorer pays only for what its model
    reads; windows keep their boundaries and times either way):
    ``window_samples``: each window also carries its filtered EEG, ``eeg`` (samples x EEG channels,
    float32), for decoders that read the signal rather than the features.
    ``window_features=False``: windows without band powers and SSVEP scores.
    ``window_quality=False``: windows without their quality figures (railed, line noise, flat).
    ``heart_rate=False``: no beats from the pulse channel.

    Feeding a block again is harmless: one already emitted is counted as a duplicate, one that
    falls in a gap given up earlier is reported as late; neither makes rows twice. That is what
    lets a rebuilt session's state meet blocks the stream had already read.
    """
    state = replace(state, pending=list(state.pending))
    if session_info is not None and state.info is None:
        state.info = session_info
    output = Output()
    pending = {b.first_sample_index: b for b in state.pending}
    for block in blocks:
        problem = _mismatch(block, state.info)
        if problem is not None:
            output.rejected.append(_note(block, problem))
        elif block.first_sample_index >= state.next_index:
            if block.first_sample_index in pending:
                output.duplicates += 1
            else:
                pending[block.first_sample_index] = block
        elif _overlaps(state.skipped, block):
            output.late.append(_note(block, "arrived after its gap was given up"))
        else:
            output.duplicates += 1
    ordered = [pending[i] for i in sorted(pending)]
    if not ordered:
        state.pending, state.gap_since_ms = [], None
        return output, state
    if state.info is None:
        # Hold blocks for the session record (channel names/types); not forever.
        if state.gap_since_ms is None:
            state.gap_since_ms = now_ms
        if now_ms - state.gap_since_ms < config.gap_wait_ms:
            state.pending = ordered
            return output, state
        state.info = fallback_info(ordered[0], config)
        state.gap_since_ms = None
        for block in list(ordered):
            problem = _mismatch(block, state.info)
            if problem is not None:
                ordered.remove(block)
                output.rejected.append(_note(block, problem))
    if ordered:
        state.fingerprints = state.fingerprints | {config.fingerprint}
    run: list[Block] = []
    while ordered:
        block = ordered[0]
        expected = (run[-1].first_sample_index + run[-1].samples.shape[0]) if run else state.next_index
        if block.first_sample_index == expected:
            run.append(ordered.pop(0))
            continue
        waited = state.gap_since_ms is not None and now_ms - state.gap_since_ms >= config.gap_wait_ms
        if not waited:
            break
        # The gap will not be filled: emit what we have, then go on after it.
        _emit_run(state, run, config, output, _Wanted(window_samples, window_features, heart_rate, window_quality))
        state.skipped = (*state.skipped, (expected, block.first_sample_index))
        run = [ordered.pop(0)]
        state.gap_since_ms = None
    _emit_run(state, run, config, output, _Wanted(window_samples, window_features, heart_rate, window_quality))
    state.pending = ordered
    if ordered and state.gap_since_ms is None:
        state.gap_since_ms = now_ms
    elif not ordered:
        state.gap_since_ms = None
    return output, state


def _note(block: Block, reason: str) -> BlockNote:
    return BlockNote(block.seq, block.first_sample_index, int(block.samples.shape[0]), reason)


def _overlaps(ranges: tuple[tuple[int, int], ...], block: Block) -> bool:
    first, end = block.first_sample_index, block.first_sample_index + block.samples.shape[0]
    return any(first < stop and start < end for start, stop in ranges)


def _mismatch(block: Block, info: SessionInfo | None) -> str | None:
    """Why ``block`` cannot belong to the session ``info`` describes, or None."""
    if block.samples.ndim != 2 or block.samples.shape[0] == 0:
        return "block has no samples"
    if info is None:
        return None
    if block.samples.shape[1] != len(info.channel_names):
        return (
            f"block has {block.samples.shape[1]} channels, its session "
            f"{len(info.channel_names)} ({', '.join(info.channel_names[:4])}...)"
        )
    if not math.isclose(block.sample_rate_hz, info.sample_rate_hz, rel_tol=1e-6):
        return f"block sample_rate_hz={block.sample_rate_hz}, its session {info.sample_rate_hz}"
    return None


@dataclass(frozen=True)
class _Wanted:
    window_samples: bool = False
    window_features: bool = True
    heart_rate: bool = True
    window_quality: bool = True


def _emit_run(
    state: SessionState, run: list[Block], config: ProcessorConfig, output: Output, wanted: _Wanted = _Wanted()
) -> None:
    if not run:
        return
    info = state.info
    assert info is not None
    first = run[0].first_sample_index
    gap = first - state.next_index
    fs = info.sample_rate_hz
    sos = design_sos(config.filter_spec(fs))
    raw = np.vstack([b.samples for b in run]).astype(np.float64)
    n_channels = raw.shape[1]
    fresh_zi = initial_state(sos, n_channels)
    if state.filter_zi is None or gap != 0 or state.filter_zi.shape != fresh_zi.shape:
        # A gap breaks the filter's memory: restart from rest rather than smear the jump.
        state.filter_zi = fresh_zi
    if gap > 0:
        state.samples_lost += gap
    filtered, state.filter_zi = filter_chunk(sos, state.filter_zi, raw)
    # Silver stores the filtered samples as float32; windows and their features take those same
    # values, so gold follows from silver's rows and the window buffer packs losslessly.
    filtered = filtered.astype(np.float32)
    times, seqs = [], []
    for block in run:
        fitted, state.dejitter = dejitter_block(
            state.dejitter, block.first_sample_index, block.device_times_us, block.sample_rate_hz
        )
        times.append(fitted + block.clock_offset_us)
        seqs.append(np.full(block.samples.shape[0], block.seq))
    lab_times = np.concatenate(times)
    device_times = np.concatenate([b.device_times_us for b in run])
    indexes = first + np.arange(raw.shape[0])
    gap_before = np.zeros(raw.shape[0], dtype=np.int64)
    gap_before[0] = max(gap, 0)
    output.samples.append(
        {
            "device_id": run[0].device_id,
            "sample_index": indexes,
            "seq": np.concatenate(seqs),
            "time_us": lab_times,
            "device_time_us": device_times,
            "raw": raw.astype(np.float32),
            "filtered": filtered,
            "gap_before": gap_before,
        }
    )
    state.next_index = first + raw.shape[0]
    state.last_seq = run[-1].seq
    if info.pulse_column is not None and wanted.heart_rate:
        _heart_beats(state, info, indexes, raw[:, info.pulse_column], lab_times, gap, output)

    spec = WindowSpec.from_seconds(fs, config.window_s, config.window_overlap)
    if state.windows is None or state.windows.buffer.shape[1] != 2 * n_channels + 1:
        state.windows = initial_window_state(2 * n_channels + 1)
    stacked = np.column_stack([raw, filtered, lab_times.astype(np.float64)])
    windows, state.windows, lost = windows_from_chunk(spec, state.windows, first, stacked)
    if not windows:
        return
    # All of a run's windows at once: the features take a stack, and numpy's per-call overhead
    # (not the arithmetic) was most of their cost on 2 s windows.
    eeg, occipital = info.eeg_columns, info.occipital_columns
    stack = np.stack([window.samples for window in windows])
    raw_w = stack[:, :, :n_channels]
    filt_w = stack[:, :, n_channels : 2 * n_channels]
    window_times = stack[:, :, -1]
    if wanted.window_quality:
        q = window_quality(raw_w[..., eeg], fs)
    if wanted.window_features:
        powers = band_powers(filt_w[..., eeg], fs).astype(np.float32)
        scores = ssvep_scores(filt_w[..., occipital], fs, info.ssvep_hz)
        ssvep_hz = np.asarray(info.ssvep_hz, dtype=np.float64)
    for number, window in enumerate(windows):
        row: dict[str, Any] = {
            "device_id": run[0].device_id,
            "window_start_index": window.start_index,
            "window_end_index": window.end_index,
            "window_start_us": int(window_times[number, 0]),
            "window_end_us": int(window_times[number, -1]),
            # Samples missing just before this window (windows never span a gap).
            "samples_lost": int(lost) if number == 0 else 0,
        }
        if wanted.window_features:
            row.update(
                {
                    "band_power": powers[number],
                    "ssvep_hz": ssvep_hz,
                    "ssvep_score": scores[number],
                }
            )
        if wanted.window_quality:
            row.update(
                {
                    "railed_pct": float(q["railed_pct"][number]),
                    "line_noise_ratio": float(q["line_noise_ratio"][number]),
                    "flat_channels": int(q["flat_channels"][number]),
                }
            )
        if wanted.window_samples:
            row["eeg"] = filt_w[number][:, eeg].astype(np.float32)
        output.windows.append(row)


def _heart_beats(
    state: SessionState,
    info: SessionInfo,
    indexes: np.ndarray,
    pulse: np.ndarray,
    lab_times: np.ndarray,
    gap: int,
    output: Output,
) -> None:
    """Beats from the pulse channel, each with the moving-average BPM of the last intervals.

    A beat is only final once ``MIN_BEAT_INTERVAL_S`` of signal follows it (a later sample could
    still be the true peak), so the tail of each run is kept and looked at again with the next one.
    """
    fs = info.sample_rate_hz
    fresh = np.column_stack([indexes, pulse, lab_times]).astype(np.float64)
    tail = state.pulse_tail if state.pulse_tail is not None and gap == 0 else None
    if tail is None and gap != 0:
        state.beat_intervals = []  # intervals across a gap mean nothing
    buffer = fresh if tail is None else np.vstack([tail, fresh])
    guard = int(MIN_BEAT_INTERVAL_S * fs)
    final_before = buffer[-1, 0] - guard
    for peak in detect_beats(buffer[:, 1], fs):
        index = int(buffer[peak, 0])
        if index <= state.last_beat_index or index > final_before:
            continue
        if state.last_beat_index >= 0 and index - state.last_beat_index >= guard:
            state.beat_intervals = (state.beat_intervals + [index - state.last_beat_index])[-BPM_AVERAGE_OVER:]
        state.last_beat_index = index
        bpm = 60.0 * fs / float(np.mean(state.beat_intervals)) if state.beat_intervals else None
        output.beats.append(
            {"device_id": info.device_id, "sample_index": index, "time_us": int(buffer[peak, 2]), "bpm": bpm}
        )
    state.pulse_tail = buffer[-int(PULSE_TAIL_S * fs) :]
