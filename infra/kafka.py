"""Kafka administration: health probe, topic creation and listing, for any Kafka-protocol cluster."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from neurolake.errors import ServiceError
from neurolake.settings import Settings
from schemas.catalog import TOPICS

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TopicInfo:
    name: str
    partitions: int
    record_type: str
    cleanup_policy: str
    description: str
    exists: bool


_quiet = logging.getLogger("infra.kafka.rdkafka")
_quiet.setLevel(logging.CRITICAL)


def admin_client(settings: Settings, quiet: bool = False) -> AdminClient:
    config = {**settings.kafka.client_config(), "socket.timeout.ms": 3000}
    if quiet:
        # Health probes expect "connection refused" while a broker starts; keep it off stderr.
        config["logger"] = _quiet
    return AdminClient(config)


def broker_reachable(settings: Settings, timeout_s: float = 1.0) -> bool:
    try:
        admin_client(settings, quiet=True).list_topics(timeout=timeout_s)
        return True
    except KafkaException:
        return False


def ensure_topics(settings: Settings, timeout_s: float = 15.0) -> dict[str, str]:
    """Create every catalog topic that is missing; returns ``{topic: "created" | "exists"}``."""
    admin = admin_client(settings)
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = []
    for spec in TOPICS.values():
        if spec.name in existing:
            continue
        config = {"cleanup.policy": "compact"} if spec.compacted else {}
        wanted.append(
            NewTopic(
                spec.name,
                num_partitions=settings.topics.partitions_for(spec.name),
                replication_factor=settings.topics.replication_factor,
                config=config,
            )
        )
    result = {name: "exists" for name in existing if name in TOPICS}
    if not wanted:
        return result
    for name, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result(timeout_s)
            result[name] = "created"
        except KafkaException as exc:
            error = exc.args[0]
            if isinstance(error, KafkaError) and error.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                result[name] = "exists"
                continue
            raise ServiceError(f"could not create topic {name}: {error}") from None
    log.info("topics: %s", ", ".join(f"{k}={v}" for k, v in sorted(result.items())))
    return result


def describe_topics(settings: Settings, timeout_s: float = 5.0) -> list[TopicInfo]:
    admin = admin_client(settings)
    try:
        metadata = admin.list_topics(timeout=timeout_s)
    except KafkaException as exc:
        raise ServiceError(
            f"cannot reach Kafka at {settings.kafka.bootstrap_servers} ({exc.args[0]}); "
            "run `neurolake up` or fix kafka.bootstrap_servers"
        ) from None
    present = [name for name in TOPICS if name in metadata.topics]
    policies: dict[str, str] = {}
    if present:
        futures = admin.describe_configs([ConfigResource("topic", name) for name in present])
        for resource, future in futures.items():
            try:
                entries = future.result(timeout_s)
                entry = entries.get("cleanup.policy")
                # This broker reports only explicitly set configs; absent means Kafka's default.
                policies[resource.name] = entry.value if entry and entry.value else "delete"
            except KafkaException:
                policies[resource.name] = "?"
    infos = []
    for spec in TOPICS.values():
        topic = metadata.topics.get(spec.name)
        infos.append(
            TopicInfo(
                name=spec.name,
                partitions=len(topic.partitions) if topic else 0,
                record_type=spec.record_type,
                cleanup_policy=policies.get(spec.name, "-"),
                description=spec.description,
                exists=topic is not None,
            )
        )
    return infos
