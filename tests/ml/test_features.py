from __future__ import annotations

import numpy as np
import pytest

from ml.features import FeatureLayoutError, feature_columns, feature_frame


def test_columns_name_band_channel_and_frequency() -> None:
    columns = feature_columns(2, [8.0, 12.5])
    assert columns[:3] == ["bp_delta_ch01", "bp_delta_ch02", "bp_theta_ch01"]
    assert columns[-2:] == ["ssvep_8hz", "ssvep_12.5hz"]


def test_frame_flattens_band_major_and_accepts_nested_lists() -> None:
    band_power = np.arange(10, dtype=float).reshape(5, 2)
    as_arrays = feature_frame([band_power], [[8.0]], [[0.5]])
    as_lists = feature_frame([[list(row) for row in band_power]], [np.array([8.0])], [np.array([0.5])])
    assert as_arrays.equals(as_lists)
    assert as_arrays.loc[0, "bp_theta_ch02"] == 3.0 and as_arrays.loc[0, "ssvep_8hz"] == 0.5


def test_mixed_layouts_are_refused() -> None:
    with pytest.raises(FeatureLayoutError, match="mix layouts"):
        feature_frame([np.zeros((5, 2)), np.zeros((5, 3))], [[8.0], [8.0]], [[0.1], [0.1]])
