import json

from streaming_jobs.runner import SILVER_WAITS_FOR_BRONZE_S, Supervised, source_lag, waiting_for_bronze


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


class _Query:
    def __init__(self, progress: dict | None) -> None:
        self.lastProgress = progress


def test_silver_waits_for_bronzes_own_first_batch_not_bronze_devices() -> None:
    supervised = {name: Supervised(name) for name in ("bronze", "bronze_devices", "silver_gold")}
    assert waiting_for_bronze(supervised, 1.0)  # bronze not started yet
    supervised["bronze"].query = _Query(None)
    supervised["bronze_devices"].query = _Query({"batchId": 0, "numInputRows": 0})
    assert waiting_for_bronze(supervised, 5.0)  # only bronze_devices has a batch
    assert not waiting_for_bronze(supervised, SILVER_WAITS_FOR_BRONZE_S)  # waited long enough
    supervised["bronze"].query = _Query({"batchId": 0, "numInputRows": 5192})
    assert not waiting_for_bronze(supervised, 5.0)
    assert not waiting_for_bronze({"silver_gold": Supervised("silver_gold")}, 1.0)  # silver alone


class _RunningQuery(_Query):
    isActive = True

    def exception(self) -> None:
        return None


def test_the_status_says_where_each_query_s_last_batch_went() -> None:
    from streaming_jobs.runner import snapshot

    phases = {"latestOffset": 18, "queryPlanning": 40, "addBatch": 1500, "walCommit": 9, "triggerExecution": 1590}
    supervised = {"silver_gold": Supervised("silver_gold", query=_RunningQuery({"batchId": 7, "durationMs": phases}))}
    status = snapshot(supervised)["queries"]["silver_gold"]
    assert status["last_batch"] == 7 and status["batch_ms"] == 1590 and status["phases_ms"] == phases
    assert snapshot({"bronze": Supervised("bronze")})["queries"]["bronze"]["phases_ms"] == {}
