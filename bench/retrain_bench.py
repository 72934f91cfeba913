"""What a retrain can gain on the lab's own simulated sessions: why the demo's champion rarely swaps.

The demo's first champion is trained on the sample lake (simulated sessions of subjects whose
simulation seeds the demo's headsets share); the retrain DAG adds the headsets' own windows, and the
gate keeps the champion unless the new model beats it on held-out sessions. This bench asks the
question under that gate: per simulated subject, a ``ssvep_lda`` pipeline (the one the gate picks
every time) trained on the *other* subjects, on the others *plus* the first half of this subject's
session, and on that half alone, all scored on the session's second half; filter-bank CCA (no
training) beside them. Windows, features and labels come from the lake's own code (the sample lake's
session simulation, ``dsp.session.process``, marker labels), at the settings' SNR and layout.

    python bench/retrain_bench.py                  # 6 subjects x 120 s
    python bench/retrain_bench.py --subjects 8 --seconds 180
    python bench/retrain_bench.py --others-snr-db 0   # the others recorded at another SNR

Prints one line per subject and the mean gain of "others + own" over "others": a gain near 0 means a
retrain on the lab's own windows cannot beat the first champion but by chance. ``--others-snr-db``
simulates the others' sessions at another SNR than the subject's (an archive from other conditions
than the lab's: the domain shift a retrain on the lab's own windows corrects), and adds "others + lab":
the archive, the lab's other subjects at the subject's SNR and the subject's first half, as the demo's
retrain trains.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from batch_jobs.sample_lake import SESSION_START_US, simulate_session
from core.settings import Settings, load_settings
from dsp.labels import intervals_from_markers, label_windows
from dsp.session import SessionState, info_from_session_record, process
from ml.decoders import FilterBankCCA
from ml.features import windows_feature_frame
from ml.pipelines import make_pipeline
from streaming_jobs.lake_rows import windows_table
from streaming_jobs.silver_gold import processor_config


@dataclass
class Subject:
    features: pd.DataFrame
    occipital_windows: np.ndarray  # (windows, samples, occipital channels), filtered as the lake filters
    labels: np.ndarray
    sample_rate_hz: float


def simulated_subject(settings: Settings, number: int, seconds: float) -> Subject:
    """One sample-lake session (subject ``number``) through the lake's processor: its labelled windows."""
    config = processor_config(settings)
    session = simulate_session(settings, number, seconds, SESSION_START_US + number * int((seconds + 60) * 1e6))
    info = info_from_session_record(session.session_record, config)
    state, windows = SessionState(), []
    for block in session.blocks:
        output, state = process(state, [block], 0, config, info, window_samples=True)
        windows += output.windows
    frame = windows_table(session.session_id, windows).to_pandas()
    labels = label_windows(frame, intervals_from_markers(pd.DataFrame(session.marker_rows())))
    keep = np.array([label is not None for label in labels])
    eeg = info.eeg_columns.tolist()
    occipital = [eeg.index(c) for c in info.occipital_columns if c in eeg]
    return Subject(
        windows_feature_frame(frame[keep].reset_index(drop=True)),
        np.stack([w["eeg"] for w in windows])[keep][:, :, occipital],
        labels[keep].astype(str),
        info.sample_rate_hz,
    )


def lda_accuracy(
    settings: Settings, train_x: pd.DataFrame, train_y: np.ndarray, test_x: pd.DataFrame, test_y: np.ndarray
) -> float:
    model = make_pipeline("ssvep_lda", settings.ml).fit(train_x, train_y)
    return float(np.mean(model.predict(test_x) == test_y))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subjects", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=120.0, help="per session")
    parser.add_argument(
        "--others-snr-db",
        type=float,
        default=None,
        help="the others' SSVEP SNR (default: the settings', as the subject's)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    settings = load_settings()
    subjects = [simulated_subject(settings, n, args.seconds) for n in range(args.subjects)]
    archive = subjects
    if args.others_snr_db is not None:
        simulation = settings.edge.simulation.model_copy(update={"ssvep_snr_db": args.others_snr_db})
        shifted = settings.model_copy(update={"edge": settings.edge.model_copy(update={"simulation": simulation})})
        archive = [simulated_subject(shifted, n, args.seconds) for n in range(args.subjects)]
    classes = settings.edge.stimulus.classes
    targets = sorted(classes)
    fbcca = FilterBankCCA(
        sample_rate_hz=subjects[0].sample_rate_hz,
        frequencies_hz=[classes[t] for t in targets],
        labels=targets,
        n_bands=3,
        n_harmonics=3,
    ).fit()
    print(
        f"retrain bench: {args.subjects} simulated subjects x {args.seconds:.0f} s, {len(targets)} targets, "
        f"SNR {settings.edge.simulation.ssvep_snr_db} dB"
        + ("" if args.others_snr_db is None else f" (others {args.others_snr_db} dB)")
        + f", {settings.lake.window_s} s windows; "
        "accuracy on each session's second half"
    )
    shifted_archive = archive is not subjects
    print(
        f"  {'subject':>7} {'windows':>7} {'fbcca':>6} {'others':>7} {'others+own':>10} {'own only':>8}"
        + (f" {'others+lab':>10}" if shifted_archive else "")
    )
    gains, lab_gains = [], []
    for number, subject in enumerate(subjects):
        half = len(subject.labels) // 2
        test_x, test_y = subject.features.iloc[half:], subject.labels[half:]
        others = [s for n, s in enumerate(archive) if n != number]
        other_x = pd.concat([s.features for s in others])
        other_y = np.concatenate([s.labels for s in others])

        first = lda_accuracy(settings, other_x, other_y, test_x, test_y)
        retrained = lda_accuracy(
            settings,
            pd.concat([other_x, subject.features.iloc[:half]]),
            np.concatenate([other_y, subject.labels[:half]]),
            test_x,
            test_y,
        )
        own = lda_accuracy(settings, subject.features.iloc[:half], subject.labels[:half], test_x, test_y)
        training_free = float(np.mean(fbcca.predict(subject.occipital_windows[half:]) == test_y))
        gains.append(retrained - first)
        line = f"  {number:>7} {len(test_y):>7} {training_free:>6.3f} {first:>7.3f} {retrained:>10.3f} {own:>8.3f}"
        if shifted_archive:
            # The demo's retrain: the archive, the other lab subjects' sessions and this one's first half.
            lab = [s for n, s in enumerate(subjects) if n != number]
            with_lab = lda_accuracy(
                settings,
                pd.concat([other_x, *(s.features for s in lab), subject.features.iloc[:half]]),
                np.concatenate([other_y, *(s.labels for s in lab), subject.labels[:half]]),
                test_x,
                test_y,
            )
            lab_gains.append(with_lab - first)
            line += f" {with_lab:>10.3f}"
        print(line)
    print(
        f"retrain: mean gain of others+own over others {np.mean(gains):+.3f} "
        f"(min {np.min(gains):+.3f}, max {np.max(gains):+.3f})"
    )
    if lab_gains:
        print(
            f"retrain: mean gain of others+lab (the lab's other subjects too) over others {np.mean(lab_gains):+.3f} "
            f"(min {np.min(lab_gains):+.3f}, max {np.max(lab_gains):+.3f})"
        )


if __name__ == "__main__":
    main()
