import json

from streaming_jobs.runner import source_lag


def test_lag_per_kafka_partition_and_per_delta_table() -> None:
    kafka = {
        "description": "KafkaV2[Subscribe[eeg.raw,sessions]]",
        "endOffset": json.dumps({"eeg.raw": {"0": 10, "1": 7}, "sessions": {"0": 2}}),
        "latestOffset": json.dumps({"eeg.raw": {"0": 12, "1": 7}, "sessions": {"0": 2}}),
    }
    delta = {
        "description": "DeltaSource[file:/lake/bronze/eeg_blocks]",
        "endOffset": json.dumps({"sourceVersion": 1, "reservoirVersion": 40, "index": -1}),
        "latestOffset": json.dumps({"sourceVersion": 1, "reservoirVersion": 43, "index": -1}),
    }
    assert source_lag({"sources": [kafka, delta]}) == {
        "eeg.raw[0]": 2,
        "eeg.raw[1]": 0,
        "sessions[0]": 0,
        "bronze.eeg_blocks": 3,
    }
    assert source_lag({"sources": [{"endOffset": None, "latestOffset": "null"}]}) == {}
    assert source_lag({}) == {}
