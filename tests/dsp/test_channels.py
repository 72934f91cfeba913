"""Channel labels to standard electrode names (MNE's standard_1005 spelling)."""

from __future__ import annotations

import pytest

from batch_jobs.importers import standard_electrodes
from dsp.channels import normalise_channel_names, standard_name

STANDARD = {name.lower(): name for name in standard_electrodes()}


@pytest.mark.parametrize(
    ("label", "expected"),
    [
        ("EEG FP1-REF", "Fp1"),
        ("FP1", "Fp1"),
        ("Fp1-A1", "Fp1"),
        ("EEG Fp1-LE", "Fp1"),
        ("eeg o1", "O1"),
        ("POZ", "POz"),
        ("EEG-Fz", "Fz"),  # BCI Competition IV / BNCI 2014-001
        ("EEG CZ-AVG", "Cz"),
        ("T3", "T3"),  # the old 10-20 name is a standard_1005 name too
        ("A1", "A1"),
        ("A1-REF", "A1"),
        (" fcc3h ", "FCC3h"),
    ],
)
def test_labels_become_standard_names(label: str, expected: str) -> None:
    assert standard_name(label, STANDARD) == expected


@pytest.mark.parametrize("label", ["Fp1-F7", "EEG-0", "EXG1", "Photo", "EEG"])
def test_labels_without_a_standard_name(label: str) -> None:
    assert standard_name(label, STANDARD) is None  # a bipolar derivation stays one


def test_a_recordings_channels_and_what_was_renamed() -> None:
    labels = ["EEG FP1-REF", "EEG Fp2-REF", "Cz", "EEG-0", "EEG Fp1-LE", "ECG", "EOG-left"]
    types = ["eeg", "eeg", "eeg", "eeg", "eeg", "ecg", "eog"]
    naming = normalise_channel_names(labels, types, standard_electrodes())
    assert naming.names == ("Fp1", "Fp2", "Cz", "EEG-0", "EEG Fp1-LE", "ECG", "EOG-left")
    assert naming.renamed == {"EEG FP1-REF": "Fp1", "EEG Fp2-REF": "Fp2"}
    assert naming.kept == ("EEG-0",) and naming.duplicates == ("EEG Fp1-LE",)
