"""Column descriptions for the data dictionary (``neurolake tables --describe``).

Bronze tables are Avro records plus Kafka columns: their descriptions come from the ``doc`` of each
field in ``schemas/avro/*.avsc`` (the one source of truth). Silver and gold columns are derived by
the streaming jobs; they are described here, next to nothing else.
"""

from __future__ import annotations

from schemas.catalog import LAKE_TABLE_OF_TOPIC
from streaming_jobs.bronze import BRONZE_TABLES, QUARANTINE_TABLE

KAFKA_DOCS = {
    "kafka_topic": "Topic the record was read from (import:TOPIC for recordings imported from files).",
    "kafka_partition": "Kafka partition (-1 for imported recordings).",
    "kafka_offset": "Offset within the partition (the record's seq for imported recordings).",
    "ingest_us": "When bronze wrote the record, lab clock, microseconds since the epoch (UTC).",
    "date": "Partition column: UTC date of the record's own time (yyyy-mm-dd).",
}

DERIVED_DOCS: dict[str, dict[str, str]] = {
    "silver.eeg_samples": {
        "sample_index": "Index of the sample within its session (0-based; gaps show as jumps).",
        "seq": "seq of the eeg_block that carried the sample.",
        "time_us": "Dejittered lab time of the sample, microseconds since the epoch (UTC).",
        "device_time_us": "The board's raw host timestamp for the sample (device clock, jittery).",
        "raw": "The sample, one float32 per channel in the session's channel order and units.",
        "filtered": "The sample after the stateful band-pass (lake.band_low_hz..band_high_hz) and notch.",
        "gap_before": "Samples lost immediately before this one (0 when contiguous).",
    },
    "silver.heart_rate": {
        "sample_index": "Sample index of the detected beat in the pulse channel.",
        "time_us": "Lab time of the beat.",
        "bpm": "Heart rate over the last beats, beats per minute (null for the first beat).",
    },
    "silver.markers": {
        "time_us": "Marker time, lab clock, microseconds since the epoch (UTC).",
    },
    "silver.sensor_readings": {
        "time_us": "Lab time of the reading (device time plus its clock offset).",
    },
    "gold.eeg_windows": {
        "window_start_index": "First sample index of the window.",
        "window_end_index": "Sample index one past the window's last sample.",
        "window_start_us": "Lab time of the first sample.",
        "window_end_us": "Lab time of the last sample.",
        "band_power": "Log10 band power per EEG channel and band (delta, theta, alpha, beta, gamma).",
        "ssvep_hz": "Flicker frequencies scored (from the session's stimulus.* metadata).",
        "ssvep_score": "CCA correlation of the occipital channels with each frequency's references.",
        "railed_pct": "Percent of samples at the amplifier's rails.",
        "line_noise_ratio": "Power at the mains frequency over broadband power.",
        "flat_channels": "EEG channels with (near) zero variance in the window.",
        "samples_lost": "Samples lost inside the window.",
        "label": "Stimulus label of the trial the window lies wholly inside (null otherwise).",
    },
    "gold.predictions": {
        "label": "Predicted class.",
        "probabilities": "Probability per class.",
        "model_name": "Registered MLflow model that scored the window.",
        "model_version": "Its version.",
        "scored_us": "When the lake scorer scored the window.",
    },
    "gold.live_predictions": {
        "label": "Predicted class.",
        "probabilities": "Probability per class.",
        "model_name": "Registered MLflow model (the @champion the live scorer followed).",
        "model_version": "Its version.",
        "seq": "The live scorer's record number (per scorer process: it starts over when the scorer restarts).",
        "arrival_us": "When the prediction arrived in the lake (bronze's batch), lab clock, microseconds.",
        "date": "Partition column: UTC date of scored_us (yyyy-mm-dd).",
    },
    "bronze.quarantine": {
        "key": "The record's Kafka key, as received.",
        "value": "The record's bytes, as received (never dropped).",
        "reason": "Why it could not be decoded or validated.",
    },
}

COMMON_DOCS = {
    "session_id": "Recording session (see bronze.sessions).",
    "device_id": "Edge device (headset, camera, sensor Pi) that produced the record.",
    "seq": "Per-device sequence number.",
    "date": KAFKA_DOCS["date"],
}


def _avro_docs(record_type: str) -> dict[str, str]:
    from schemas.codec import default_codec

    fields = default_codec().schema(record_type).raw["fields"]
    return {f["name"]: f.get("doc", "") for f in fields}


# Tables outside bronze that a topic's records land in as they are (gold.live_predictions).
LANDED_OUTSIDE_BRONZE = {spec.qualified: topic for topic, spec in LAKE_TABLE_OF_TOPIC.items() if spec.layer != "bronze"}


def column_docs(table: str) -> dict[str, str]:
    from schemas.catalog import TOPICS

    docs = dict(COMMON_DOCS)
    layer, name = table.split(".", 1)
    if layer == "bronze" and name != QUARANTINE_TABLE:
        topic = next((t for t, n in BRONZE_TABLES.items() if n == name), None)
        if topic is not None:
            docs.update({k: v for k, v in _avro_docs(TOPICS[topic].record_type).items() if v})
        docs.update(KAFKA_DOCS)
    landed = LANDED_OUTSIDE_BRONZE.get(table)
    if landed is not None:
        docs.update({k: v for k, v in _avro_docs(TOPICS[landed].record_type).items() if v})
        docs.update(KAFKA_DOCS)
    if layer == "silver" and name in ("markers", "sensor_readings"):
        source = {"markers": "marker", "sensor_readings": "sensor_reading"}[name]
        docs.update({k: v for k, v in _avro_docs(source).items() if v})
    docs.update(DERIVED_DOCS.get(table, {}))
    return docs
