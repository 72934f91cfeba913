"""Channel labels to standard electrode names: ``EEG FP1-REF``, ``FP1``, ``Fp1-A1``, ``EEG Fp1-LE``,
``eeg o1`` are ``Fp1`` and ``O1`` as MNE's standard_1005 montage spells them.

Recording software writes the same electrode many ways: EDF+'s type prefix (``EEG``), the
reference as a suffix (``-REF``, ``-A1``, ``-LE``, ``-AVG``), any letter case. A label is
normalised only when, after taking those off, it is a standard name (case aside); anything else,
a bipolar derivation such as ``Fp1-F7`` included, is kept as it was and reported. Pure: the
standard names are passed in (batch_jobs reads them from MNE).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

# What a label may start with to say its signal type (EDF+ "EEG Fp1", BCI Competition "EEG-Fz").
_TYPE_PREFIX = re.compile(r"^(?:EEG|EOG|EMG|ECG|EKG)(?:[\s_:-]+)(?=\S)", re.IGNORECASE)
# What a label may end with to name its reference: REF, linked or single ears and mastoids,
# average. A1/A2/M1/M2 are electrodes too: they are dropped only as a suffix after a separator.
_REFERENCE_SUFFIX = re.compile(
    r"[\s_/-]+(?:REF|REFERENCE|LE|RE|LM|LINKED|EARS?|A1|A2|A1A2|A12|M1|M2|M1M2|M12|AVG|AV|AR|CAR|CZ)$",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class ChannelNaming:
    names: tuple[str, ...]
    renamed: dict[str, str] = field(default_factory=dict)  # label -> standard name, those that changed
    kept: tuple[str, ...] = ()  # EEG labels with no standard name, kept as they were
    duplicates: tuple[str, ...] = ()  # labels naming an electrode an earlier channel already took


def standard_name(label: str, standard: dict[str, str]) -> str | None:
    """The standard spelling of ``label`` (``standard``: lower-case name -> spelling), or None."""
    text = _TYPE_PREFIX.sub("", label.strip())
    for candidate in (text, _REFERENCE_SUFFIX.sub("", text)):
        found = standard.get(candidate.strip().lower())
        if found is not None:
            return found
    return None


def normalise_channel_names(
    labels: Sequence[str], types: Sequence[str], standard_names: Iterable[str], kinds: tuple[str, ...] = ("eeg",)
) -> ChannelNaming:
    """Standard names for the channels of ``kinds`` (EEG by default); other channels keep theirs."""
    standard = {name.lower(): name for name in standard_names}
    names: list[str] = []
    renamed: dict[str, str] = {}
    kept: list[str] = []
    duplicates: list[str] = []
    taken = {label for label, kind in zip(labels, types) if kind not in kinds}
    for label, kind in zip(labels, types):
        found = standard_name(label, standard) if kind in kinds else None
        if kind in kinds and found is None:
            kept.append(label)
        if found is None:
            names.append(label)
            continue
        if found in taken:
            duplicates.append(label)
            names.append(label)
            continue
        taken.add(found)
        names.append(found)
        if found != label:
            renamed[label] = found
    return ChannelNaming(tuple(names), renamed, tuple(kept), tuple(duplicates))
