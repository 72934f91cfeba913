"""A small guard on the ``benchmark`` SNR's calibration (the full one is bench/decoding_bench.py with 35
subjects): on a few simulated subjects, FBCCA and eTRCA at 1 s stay in the neighbourhood of the
published figures on the real benchmark (0.63 and 0.93), and eTRCA stays well above FBCCA at 0.5 s
(0.79 against 0.20). Loose bounds: three subjects vary far more than thirty-five."""

from __future__ import annotations

import numpy as np

from bench.decoding_bench import decoders, simulate_subject, snr_db, windows
from dsp.ssvep import benchmark_layout
from ml.evaluation import leave_one_block_out


def test_benchmark_snr_keeps_fbcca_and_etrca_near_the_published_figures() -> None:
    layout = benchmark_layout()
    accuracy: dict[tuple[str, float], list[float]] = {}
    for subject in range(3):
        blocks, fs = simulate_subject(layout, snr_db("benchmark"), subject, session=1)
        models = decoders(layout, fs)
        for window_s in (0.5, 1.0):
            x, y, g = windows(blocks, layout, fs, window_s)
            for method in ("fbcca", "etrca"):
                predictions = leave_one_block_out(models[method], x, y, g)
                accuracy.setdefault((method, window_s), []).append(predictions.accuracy)
    mean = {key: float(np.mean(values)) for key, values in accuracy.items()}
    assert 0.35 < mean[("fbcca", 1.0)] < 0.9, mean
    assert 0.75 < mean[("etrca", 1.0)], mean
    assert mean[("etrca", 0.5)] > mean[("fbcca", 0.5)] + 0.3, mean
    assert mean[("fbcca", 0.5)] < 0.45, mean
