"""Record signatures: what verifies, what does not, and why."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest

from schemas.codec import default_codec
from schemas.signing import DEVICE, HUB, Keyring, SignatureError, ensure_key, new_key, sign, split_signed
from tests.schemas.samples import sample_records


@pytest.fixture
def keyring(tmp_path: Path) -> Keyring:
    return Keyring(tmp_path / "keyring.json")


def test_a_signed_record_verifies_and_still_decodes_with_the_plain_codec(keyring: Keyring) -> None:
    key = ensure_key(keyring, "pi-1")
    record = default_codec().encode("eeg_block", sample_records()["eeg_block"])
    value = sign(record, "eeg.raw", key)
    assert keyring.verify(value, "eeg.raw") == (record, key)
    assert default_codec().decode(value) == default_codec().decode(record)


def test_every_forgery_names_its_reason(keyring: Keyring) -> None:
    key = ensure_key(keyring, "pi-1")
    record = default_codec().encode("eeg_block", sample_records()["eeg_block"])
    value = sign(record, "eeg.raw", key)
    cases = {
        "unsigned record": record,
        "unknown key": sign(record, "eeg.raw", new_key("pi-1")),
        "bad signature": value[:20] + bytes([value[20] ^ 1]) + value[21:],
    }
    for reason, forged in cases.items():
        with pytest.raises(SignatureError, match=reason):
            keyring.verify(forged, "eeg.raw")
    with pytest.raises(SignatureError, match="bad signature"):
        keyring.verify(value, "markers")  # replayed on another topic
    with pytest.raises(SignatureError, match="bad signature"):
        keyring.verify(value, "eeg.raw", direction=HUB)  # a device's record is no hub command
    with pytest.raises(SignatureError, match="malformed"):
        split_signed(b"x" * 40 + b"\x00NLS1")


def test_revoked_keys_stop_verifying_in_every_process_that_reloads(keyring: Keyring, tmp_path: Path) -> None:
    key = ensure_key(keyring, "pi-1")
    value = sign(b"record", "eeg.raw", key, DEVICE)
    other_process = Keyring(tmp_path / "keyring.json")
    assert other_process.verify(value, "eeg.raw")[1] == key
    keyring.revoke(key.key_id)
    other_process.reload()
    with pytest.raises(SignatureError, match="revoked key"):
        other_process.verify(value, "eeg.raw")
    assert ensure_key(keyring, "pi-1").key_id != key.key_id  # a new key for the device
    assert stat.S_IMODE((tmp_path / "keyring.json").stat().st_mode) == 0o600


def test_a_damaged_keyring_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "keyring.json"
    path.write_text(json.dumps({"keys": [{"device_id": "pi-1"}]}))
    with pytest.raises(SignatureError, match="not a neurolake keyring"):
        Keyring(path)
