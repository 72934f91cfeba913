"""Display-frame timing maths: refresh, jitter, dropped frames, achieved flicker frequency."""

from __future__ import annotations

import numpy as np

from edge_producers.frames import fit_sinusoid, frame_timing
from edge_producers.stimulus import luminance


def test_a_steady_display_with_two_missed_frames() -> None:
    rng = np.random.default_rng(0)
    vsyncs = np.arange(600) * (1000 / 60)
    shown = np.delete(vsyncs, [100, 300, 301])  # three refreshes no callback drew
    times = shown + rng.normal(0, 0.05, shown.size)
    timing = frame_timing(times)
    assert abs(timing.refresh_hz - 60) < 0.05 and timing.dropped == 3 and timing.frames == 597
    assert 0.03 < timing.jitter_ms < 0.1


def test_the_achieved_frequency_of_frames_drawn_with_a_dropped_frame() -> None:
    # Frames counted from the time elapsed (as the page does) keep the sinusoid on time across a
    # missed refresh; the fit over the frames actually drawn finds the frequency asked for.
    period = 1000 / 60
    times = np.delete(np.arange(300) * period, [50, 51, 200])
    frames = np.rint(times / period)
    values = np.round(255 * luminance(frames, 11.4, np.pi, 60.0)) / 255  # 8-bit grey levels
    fit = fit_sinusoid(times / 1000, values, 11.4)
    assert abs(fit.hz - 11.4) < 1e-3 and abs(np.angle(np.exp(1j * (fit.phase - np.pi)))) < 0.01
    assert abs(fit.amplitude - 0.5) < 0.01 and fit.rms_residual < 0.01


def test_too_few_frames() -> None:
    assert frame_timing(np.array([0.0, 16.7])).dropped == 0
