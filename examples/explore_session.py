"""A notebook in script form: one session's spectrum and epochs with MNE, band powers per class
with DuckDB.

    .venv/bin/python examples/explore_session.py [--session ID] [--out DIR]

Run it against the lake `make demo` filled (or any lake: NEUROLAKE_PATHS__LAKE_ROOT). With no
session in the lake, it first backfills one simulated 60 s SSVEP session so there is something to
look at. Figures are written to --out (default: examples/out).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import duckdb
import matplotlib

matplotlib.use("Agg")  # files, not windows
import mne  # noqa: E402

from neurolake import lake  # noqa: E402
from core.settings import load_settings  # noqa: E402

log = logging.getLogger("explore_session")


def ensure_a_session(settings) -> str:  # type: ignore[no-untyped-def]
    sessions = lake.sessions(settings=settings)
    if len(sessions):
        return str(sessions["session_id"].iloc[-1])
    from batch_jobs.recording import write_session
    from batch_jobs.sample_lake import SESSION_START_US, simulate_session
    from streaming_jobs.silver_gold import processor_config

    log.info("the lake at %s has no session: backfilling a simulated one", settings.paths.lake_root)
    recording = simulate_session(settings, 0, 60.0, SESSION_START_US).recording()
    from infra.spark import build_spark_session

    write_session(
        settings.paths.lake_root, recording, processor_config(settings), lambda: build_spark_session(settings, "explore")
    )
    return recording.session_id


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", default=None, help="session id (default: the newest)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    settings = load_settings()
    args.out.mkdir(parents=True, exist_ok=True)

    # 1. A session as MNE Raw: montage, volts, the stimulus trials as annotations.
    session_id = args.session or ensure_a_session(settings)
    raw = lake.session(session_id, settings=settings)
    log.info("%s: %d channels, %.0f s, annotations %s", session_id, len(raw.ch_names), raw.times[-1],
             sorted(set(raw.annotations.description)))

    # 2. Its spectrum (occipital channels show the flicker frequencies).
    eeg = raw.copy().pick("eeg").filter(1.0, 45.0, verbose="error")
    figure = eeg.compute_psd(fmax=40.0, verbose="error").plot(show=False)
    figure.savefig(args.out / "psd.png", dpi=100)

    # 3. Epochs around the stimulus starts, averaged per class.
    events, event_id = mne.events_from_annotations(eeg, verbose="error")
    stimuli = {k: v for k, v in event_id.items() if not k.startswith("BAD")}
    if stimuli:
        epochs = mne.Epochs(eeg, events, stimuli, tmin=-0.5, tmax=3.5, baseline=(None, 0), preload=True,
                            verbose="error")
        log.info("epochs per class: %s", {k: len(epochs[k]) for k in stimuli})
        for name in stimuli:
            figure = epochs[name].average().plot(show=False, spatial_colors=True)
            figure.savefig(args.out / f"epochs_{name}.png", dpi=100)

    # 4. Band powers per class with DuckDB over gold.eeg_windows (pinned to a version).
    version = lake.version("gold.eeg_windows", settings=settings)
    windows = lake.table("gold.eeg_windows", version=version, settings=settings,  # noqa: F841 (DuckDB reads it)
                         columns=["session_id", "label", "band_power", "ssvep_hz", "ssvep_score"])
    per_class = duckdb.sql("""
        SELECT label, count(*) AS windows,
               round(avg(list_avg(list_transform(band_power, lambda b: b[3]))), 3) AS mean_log_alpha,
               round(avg(ssvep_score[list_position(ssvep_hz, 12.0)]), 3) AS mean_cca_12hz
        FROM windows WHERE label IS NOT NULL GROUP BY label ORDER BY label
    """)
    log.info("gold.eeg_windows v%d, windows inside a trial, per class:\n%s", version, per_class)
    log.info("figures in %s", args.out)


if __name__ == "__main__":
    main()
