"""Kafka manifests for the production cluster (Strimzi), generated from ``schemas.catalog``.

A topic added to the catalog must appear in the cluster with its partitions, replicas and retention,
and a Pi's certificate must get the same rights on the cluster that ``infra.kafka.device_acls``
gives it on the embedded broker. Writing those by hand would let them drift, so they come from here:

    python -m infra.production.manifests topics          # (re)write kubernetes/kafka/topics.yaml
    python -m infra.production.manifests topics --check  # exit 1 if the file differs (CI, tests)
    python -m infra.production.manifests device pi-3     # a Pi's KafkaUser, to apply with kubectl
    python -m infra.production.manifests table           # the topic sizing table of README.md

Partition counts and retention follow from named assumptions (``TOPIC_LOADS``) about one headset's
traffic at the defaults, for ``HEADSETS`` headsets; README.md shows the table this module prints.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from schemas.catalog import (
    CAMERA_FRAMES,
    COMMAND_ACKS,
    CONTROL,
    DEADLETTER,
    DEVICE_LOGS,
    DEVICE_READS,
    DEVICE_STATUS,
    DEVICE_WRITES,
    EDGE_CONTROL_GROUP,
    EEG_RAW,
    MARKERS,
    PREDICTIONS,
    SENSORS_ENV,
    SESSIONS,
    TOPICS,
)

HERE = Path(__file__).resolve().parent
TOPICS_FILE = HERE / "kubernetes" / "kafka" / "topics.yaml"

CLUSTER = "neurolake"  # the Kafka resource's name: Strimzi links topics and users to it by label
HUB_USER = "neurolake-hub"  # the hub's certificate (Spark, scorer, dashboard, Airflow): a super user
HEADSETS = 1000
BROKERS = 3
REPLICAS = 3
MIN_INSYNC = 2
# What one partition should carry at most, in bytes/s written: a tenth of what a partition leader
# and one consumer sustain on ordinary disks, so a consumer that fell behind catches up at 10x.
PARTITION_BUDGET_BYTES_S = 5_000_000
HOUR_MS = 3_600_000


@dataclass(frozen=True)
class TopicLoad:
    """One headset's traffic on a topic and how long the cluster keeps it (the assumptions)."""

    bytes_per_headset_s: float
    # None: compacted (the newest record per key is kept for ever).
    retention_hours: int | None
    # Parallelism the readers need, whatever the bytes: Spark's Kafka source runs one task per
    # partition, and partitions can only grow (growing them moves keys, hence devices, between them).
    min_partitions: int
    assumption: str


TOPIC_LOADS: dict[str, TopicLoad] = {
    EEG_RAW: TopicLoad(
        18_000,
        72,
        60,
        "16 ch x 250 Hz x float32 = 16 kB/s, plus Avro, signature and batch overhead; 60 partitions so that "
        "bronze can spread 1,000 headsets over up to 60 executor cores",
    ),
    CAMERA_FRAMES: TopicLoad(
        20_000,
        24,
        12,
        "edge.camera defaults: 2 fps of 320x240 JPEG (~10 kB); 24 fps at 640x480 is ~35x this",
    ),
    SENSORS_ENV: TopicLoad(150, 72, 3, "one room reading a second"),
    MARKERS: TopicLoad(100, 72, 3, "a marker at each trial edge"),
    SESSIONS: TopicLoad(1, None, 3, "one record per session, kept (compacted) for readers that start late"),
    DEVICE_STATUS: TopicLoad(150, 72, 3, "a heartbeat every edge.heartbeat_s (2 s)"),
    DEVICE_LOGS: TopicLoad(100, 72, 3, "a log line a second at most"),
    CONTROL: TopicLoad(150, 24, 3, "bronze's spool acks, one a second per device; commands are fresh only"),
    COMMAND_ACKS: TopicLoad(1, 24, 3, "a device's acks of commands"),
    PREDICTIONS: TopicLoad(500, 24, 12, "a 2 s window every 0.4 s; gold.predictions is the record"),
    DEADLETTER: TopicLoad(1, 336, 3, "kept two weeks to investigate"),
}


def partitions(topic: str, headsets: int = HEADSETS) -> int:
    """Enough partitions for the bytes and the readers' parallelism, rounded up to a multiple of
    the broker count so that partition leaders spread evenly over the brokers."""
    load = TOPIC_LOADS[topic]
    by_bytes = math.ceil(load.bytes_per_headset_s * headsets / PARTITION_BUDGET_BYTES_S)
    wanted = max(load.min_partitions, by_bytes, 1)
    return math.ceil(wanted / BROKERS) * BROKERS


def topic_config(topic: str) -> dict[str, str | int]:
    load = TOPIC_LOADS[topic]
    config: dict[str, str | int] = {"min.insync.replicas": MIN_INSYNC}
    if TOPICS[topic].compacted:
        config["cleanup.policy"] = "compact"
    else:
        config["cleanup.policy"] = "delete"
        assert load.retention_hours is not None, f"{topic}: a deleted topic needs a retention"
        config["retention.ms"] = load.retention_hours * HOUR_MS
    return config


def topic_manifest(topic: str) -> dict[str, Any]:
    spec = TOPICS[topic]
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaTopic",
        "metadata": {
            "name": _resource_name(topic),
            "labels": {"strimzi.io/cluster": CLUSTER, "app.kubernetes.io/part-of": "neurolake"},
            "annotations": {"neurolake/record-type": spec.record_type, "neurolake/key": spec.key},
        },
        "spec": {
            "topicName": topic,
            "partitions": partitions(topic),
            "replicas": REPLICAS,
            "config": topic_config(topic),
        },
    }


def render_topics() -> str:
    import yaml

    header = (
        "# Generated by `python -m infra.production.manifests topics` from schemas/catalog.py: do not edit.\n"
        "# tests/infra/test_production.py fails when this file and the catalog disagree.\n"
    )
    documents = [topic_manifest(topic) for topic in TOPICS]
    body: str = yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)
    return header + body


def _acl(resource_type: str, name: str, operations: list[str]) -> dict[str, Any]:
    return {
        "resource": {"type": resource_type, "name": name, "patternType": "literal"},
        "operations": operations,
        "host": "*",
    }


def device_acl_rules() -> list[dict[str, Any]]:
    """A Pi's rights, as ``infra.kafka.device_acls`` grants them on the embedded broker: write its
    data topics and ``devices.acks``, read ``devices.control`` (and its consumer group's coordinator);
    nothing else. (DESCRIBE comes with READ and WRITE in Kafka's authorizer, and WRITE on a topic
    is all an idempotent producer needs since Kafka 3.0.)"""
    rules = [_acl("topic", topic, ["Write"]) for topic in DEVICE_WRITES]
    rules += [_acl("topic", topic, ["Read"]) for topic in DEVICE_READS]
    rules.append(_acl("group", EDGE_CONTROL_GROUP, ["Read"]))
    return rules


# A KafkaUser's name is its certificate's CN and a Kubernetes object name (RFC 1123 subdomain).
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")


def _resource_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"{name!r} cannot name a Kubernetes resource (lower-case letters, digits, '-' and '.', "
            f"starting and ending with a letter or digit)"
        )
    return name


def device_user(device_id: str) -> dict[str, Any]:
    """The KafkaUser of one Pi: a client certificate (CN = the device id) from the clients CA,
    held to :func:`device_acl_rules`."""
    from schemas.records import identifier_problem

    problem = identifier_problem("device_id", device_id)
    if problem:
        raise ValueError(problem)
    return {
        "apiVersion": "kafka.strimzi.io/v1",
        "kind": "KafkaUser",
        "metadata": {
            "name": _resource_name(device_id),
            "labels": {
                "strimzi.io/cluster": CLUSTER,
                "app.kubernetes.io/part-of": "neurolake",
                "neurolake/role": "device",
            },
        },
        "spec": {
            "authentication": {"type": "tls"},
            "authorization": {"type": "simple", "acls": device_acl_rules()},
        },
    }


def _size(bytes_: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if bytes_ >= scale:
            return f"{bytes_ / scale:.1f} {unit}"
    return f"{bytes_:.0f} B"


def retained_bytes_per_broker(topic: str, headsets: int = HEADSETS) -> float:
    """Disk one broker holds for a topic at full retention (every replica counted, spread evenly)."""
    load = TOPIC_LOADS[topic]
    if load.retention_hours is None:
        return 0.0
    return load.bytes_per_headset_s * headsets * load.retention_hours * 3600 * REPLICAS / BROKERS


def sizing_table(headsets: int = HEADSETS) -> str:
    """The topic sizing table of README.md (a test checks the README shows this very table)."""
    rows = [
        f"| topic | bytes/s per headset (assumed) | partitions | headsets per partition | retention | "
        f"disk per broker at {headsets:,} headsets | assumption |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    total = 0.0
    for topic, load in TOPIC_LOADS.items():
        count = partitions(topic, headsets)
        disk = retained_bytes_per_broker(topic, headsets)
        total += disk
        retention = "compacted" if load.retention_hours is None else f"{load.retention_hours} h"
        rows.append(
            f"| `{topic}` | {load.bytes_per_headset_s:,.0f} | {count} | {headsets / count:.1f} | {retention} | "
            f"{_size(disk)} | {load.assumption} |"
        )
    rows.append(f"| all topics | | | | | {_size(total)} | replication {REPLICAS}, {BROKERS} brokers |")
    return "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.production.manifests", description=__doc__.split("\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    topics = commands.add_parser("topics", help="write kubernetes/kafka/topics.yaml from the catalog")
    topics.add_argument("--check", action="store_true", help="only compare; exit 1 if the file differs")
    device = commands.add_parser("device", help="print one Pi's KafkaUser")
    device.add_argument("device_id")
    commands.add_parser("table", help="print the topic sizing table")
    args = parser.parse_args(argv)
    if args.command == "topics":
        text = render_topics()
        if args.check:
            current = TOPICS_FILE.read_text() if TOPICS_FILE.is_file() else ""
            if current != text:
                print(f"{TOPICS_FILE} differs from the catalog; run `python -m infra.production.manifests topics`")
                return 1
            return 0
        TOPICS_FILE.write_text(text)
        return 0
    if args.command == "device":
        import yaml

        try:
            print(yaml.safe_dump(device_user(args.device_id), sort_keys=False), end="")
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2
        return 0
    print(sizing_table(), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
