import json

from streaming_jobs.runner import _lag


def test_lag_per_partition_and_missing_offsets() -> None:
    progress = {
        "sources": [
            {
                "endOffset": json.dumps({"eeg.raw": {"id": "a", "p": {"0": 10, "1": 5}}}),
                "latestOffset": json.dumps({"eeg.raw": {"id": "a", "p": {"0": 12, "1": 5}}}),
            }
        ]
    }
    assert _lag(progress) == {"eeg.raw[0]": 2, "eeg.raw[1]": 0}
    recreated = {
        "sources": [
            {
                "endOffset": json.dumps({"eeg.raw": {"id": "a", "p": {"0": 10}}}),
                "latestOffset": json.dumps({"eeg.raw": {"id": "b", "p": {"0": 3}}}),
            }
        ]
    }
    assert _lag(recreated) == {"eeg.raw[0]": 3}
    assert _lag({"sources": [{"endOffset": None, "latestOffset": "null"}]}) == {}
    assert _lag({}) == {}
