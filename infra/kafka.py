"""Kafka administration: health probe, topic creation and listing, for any Kafka-protocol cluster."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ConfigResource,
    NewTopic,
    ResourcePatternType,
    ResourceType,
)

from core.errors import ServiceError
from core.settings import Settings
from infra.tls import issued_names, revoked_names, tls_dir
from schemas.catalog import DEVICE_READS, DEVICE_WRITES, EDGE_CONTROL_GROUP, SESSIONS, TOPICS
from schemas.codec import CodecError, default_codec
from schemas.signing import DeviceKey, Keyring, SignatureError

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


def admin_client(settings: Settings, quiet: bool = False, bootstrap: str | None = None) -> AdminClient:
    """An admin client of the cluster (or of the one broker at ``bootstrap``)."""
    config = {**settings.kafka.client_config(), "socket.timeout.ms": 3000}
    if bootstrap is not None:
        config["bootstrap.servers"] = bootstrap
    if quiet:
        # Health probes expect "connection refused" while a broker starts; keep it off stderr.
        config["logger"] = _quiet
    return AdminClient(config)


def broker_reachable(settings: Settings, timeout_s: float = 1.0, node: int | None = None) -> bool:
    """Whether the cluster (or the embedded broker's node ``node``) answers a metadata request."""
    bootstrap = None if node is None else f"{settings.broker.host}:{settings.broker.node_ports(node)[0]}"
    try:
        admin_client(settings, quiet=True, bootstrap=bootstrap).list_topics(timeout=timeout_s)
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
        config["min.insync.replicas"] = str(settings.topics.min_insync_replicas)
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


def device_acls(principal: str) -> list[AclBinding]:
    """What one Pi's certificate may do: write its data topics and its command acks, read the hub's
    control records. Everything else (writing ``devices.control``, reading any other topic) is
    refused by the broker, since no ACL allows it."""

    def allow(topic: str, operation: AclOperation) -> AclBinding:
        return AclBinding(
            ResourceType.TOPIC,
            topic,
            ResourcePatternType.LITERAL,
            f"User:{principal}",
            "*",
            operation,
            AclPermissionType.ALLOW,
        )

    bindings = [allow(topic, AclOperation.WRITE) for topic in DEVICE_WRITES]
    bindings += [allow(topic, AclOperation.READ) for topic in DEVICE_READS]
    bindings.append(
        AclBinding(
            ResourceType.GROUP,
            EDGE_CONTROL_GROUP,
            ResourcePatternType.LITERAL,
            f"User:{principal}",
            "*",
            AclOperation.READ,
            AclPermissionType.ALLOW,
        )
    )
    # DESCRIBE (metadata, offsets) comes with READ and WRITE in Kafka's authorizer.
    return bindings


def ensure_device_acls(settings: Settings, devices: Sequence[str] | None = None, timeout_s: float = 15.0) -> int:
    """Grant each device's certificate its ACLs (idempotent: Kafka keeps one copy of a binding).
    Only the embedded broker with a TLS listener is ours to configure; returns bindings sent."""
    if not (settings.broker.embedded and settings.broker.tls_port):
        return 0
    wanted = [
        binding
        for device in (issued_names(tls_dir(settings)) if devices is None else devices)
        for binding in device_acls(device)
    ]
    if not wanted:
        return 0
    admin = admin_client(settings)  # kept alive until every future is done
    futures = admin.create_acls(wanted, request_timeout=timeout_s)
    for binding, future in futures.items():
        try:
            future.result(timeout_s)
        except KafkaException as exc:
            raise ServiceError(
                f"could not grant {binding.principal} {binding.operation} on {binding.name}: {exc}"
            ) from None
    return len(wanted)


def remove_device_acls(settings: Settings, devices: Sequence[str], timeout_s: float = 15.0) -> int:
    """Take back every ACL of each device's certificate (its principal, on any resource); the broker
    then refuses the certificate everything, though it still passes the TLS handshake. Returns the
    bindings removed."""
    if not (settings.broker.embedded and settings.broker.tls_port) or not devices:
        return 0
    # None matches any resource name and host (the stubs type them str).
    anything: Any = None
    filters = [
        AclBindingFilter(
            ResourceType.ANY,
            anything,
            ResourcePatternType.ANY,
            f"User:{device}",
            anything,
            AclOperation.ANY,
            AclPermissionType.ANY,
        )
        for device in devices
    ]
    admin = admin_client(settings)
    removed = 0
    for binding_filter, future in admin.delete_acls(filters, request_timeout=timeout_s).items():
        try:
            removed += len(future.result(timeout_s))
        except KafkaException as exc:
            raise ServiceError(f"could not remove the ACLs of {binding_filter.principal}: {exc}") from None
    return removed


def sync_device_acls(settings: Settings) -> None:
    """Each issued certificate's ACLs granted, each revoked one's taken back: after a broker start,
    so a certificate revoked while the broker was down loses its ACLs then."""
    ensure_device_acls(settings)
    remove_device_acls(settings, revoked_names(tls_dir(settings)))


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


@dataclass(frozen=True)
class LiveRecord:
    topic: str
    record_type: str
    record: dict[str, Any]
    timestamp_ms: int


class LiveReader:
    """The one consume-and-decode loop of the hub's live readers (dashboard feed, live scorer, LSL out).

    ``sessions`` is always read from its beginning: a reader needs each session's channels and rate
    before its first block. The other topics start at ``start`` ("latest" or "earliest"). Records that
    do not decode are counted in ``undecodable``, and records from the topics devices write (their
    data, heartbeats, logs and command acks) that do not carry a valid device signature (with ``security.require_signed_records``) in ``unauthenticated``;
    both are skipped: bronze quarantines them with the reason, a live view only says how many. Use it
    as a context manager so the consumer leaves its group at once.
    """

    def __init__(
        self,
        settings: Settings,
        group_id: str,
        topics: Sequence[str],
        start: str = "latest",
        logger_name: str = "infra.kafka.live",
    ) -> None:
        if start not in ("latest", "earliest"):
            raise ValueError(f"start must be 'latest' or 'earliest', not {start!r}")
        self.settings = settings
        self.topics = tuple(topics)
        self.start = start
        self.codec = default_codec()
        self.undecodable = 0
        self.unauthenticated = 0
        self.keyring = Keyring(settings.security.keyring) if settings.security.require_signed_records else None
        self._last_reload = 0.0
        self.consumer = Consumer(
            {
                **settings.kafka.client_config(),
                "group.id": group_id,
                "enable.auto.commit": False,
                # A live reader wants each record as soon as the broker has it, not a fuller fetch.
                "fetch.wait.max.ms": settings.kafka.live_fetch_wait_ms,
                "fetch.min.bytes": 1,
                "logger": logging.getLogger(logger_name),
            }
        )

    def __enter__(self) -> LiveReader:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.consumer.close()

    def assign(self, timeout_s: float = 10.0) -> list[str]:
        """Assign every partition of the wanted topics that exist; returns the topics that do not.

        Raises :class:`ServiceError` when the broker cannot be reached in ``timeout_s``.
        """
        try:
            metadata = self.consumer.list_topics(timeout=timeout_s).topics
        except KafkaException as exc:
            raise ServiceError(
                f"cannot reach Kafka at {self.settings.kafka.bootstrap_servers} ({exc.args[0]}); "
                "run `neurolake up` or fix kafka.bootstrap_servers"
            ) from None
        begin = OFFSET_BEGINNING if self.start == "earliest" else OFFSET_END
        assignment = []
        for topic in (SESSIONS, *self.topics):
            if topic in metadata:
                offset = OFFSET_BEGINNING if topic == SESSIONS else begin
                assignment += [TopicPartition(topic, p, offset) for p in metadata[topic].partitions]
        self.consumer.assign(assignment)
        return [topic for topic in (SESSIONS, *self.topics) if topic not in metadata]

    def _verify(self, value: bytes, topic: str) -> DeviceKey:
        assert self.keyring is not None
        try:
            return self.keyring.verify(value, topic)[1]
        except SignatureError:
            # A device registered a moment ago (a replay, a new headset): look at the keyring once more
            # (a stat of its file; it is read again only if it changed).
            self.keyring.reload()
            return self.keyring.verify(value, topic)[1]

    def read(self, max_records: int = 1000, timeout_s: float = 0.05) -> list[LiveRecord]:
        """The records that arrived, decoded, in partition order; waits at most ``timeout_s``."""
        records = []
        if self.keyring is not None and time.monotonic() - self._last_reload > 1.0:
            self._last_reload = time.monotonic()
            self.keyring.reload()
        # consume() waits out its whole timeout unless max_records arrive: take the first record as
        # soon as it comes, then whatever else is already here.
        first = self.consumer.poll(timeout_s)
        if first is None:
            return []
        for message in [first, *self.consumer.consume(max_records - 1, timeout=0)]:
            if message.error():
                continue
            value, topic = message.value(), message.topic()
            if value is None or topic is None:  # a tombstone: nothing to show
                self.undecodable += 1
                continue
            try:
                if self.keyring is not None and topic in DEVICE_WRITES:
                    signer = self._verify(value, topic)
                    record_type, record = self.codec.decode(value)
                    if record["device_id"] != signer.device_id:
                        raise SignatureError(f"{record['device_id']} signed as {signer.device_id}")
                else:
                    record_type, record = self.codec.decode(value)
            except SignatureError:
                self.unauthenticated += 1
                continue
            except CodecError:
                self.undecodable += 1
                continue
            records.append(LiveRecord(topic, record_type, record, message.timestamp()[1]))
        return records
