"""The embedded Apache Kafka: one KRaft node (broker and controller in one JVM), or a local cluster of
three (``broker.nodes = 3``: a quorum of three controllers that survives the loss of one node, topics
with three replicas and two in sync), started from the jars `make setup` fetched (``paths.jars/kafka``),
each node's log under ``paths.home/kafka``.

Storage is formatted once, with a cluster id kept beside it; after that a restart finds its topics,
records and producer ids where it left them. Listeners, per node:

- ``PLAINTEXT`` on ``broker.host`` (loopback): the hub's own processes. The hub is trusted (README,
  "Security model"), so this listener's principal, ``User:ANONYMOUS``, is a super user, as is the
  controllers' listener (loopback too).
- ``SSL`` on ``broker.tls_host`` when ``broker.tls_port`` is set: the Pis, each with a client
  certificate of the lab CA (``neurolake tls issue DEVICE``); the certificate's CN is the principal,
  and the StandardAuthorizer holds it to the ACLs :func:`infra.kafka.ensure_device_acls` grants
  (write its data topics, read ``devices.control``; nothing else). A client without a certificate
  of our CA fails the handshake.
"""

from __future__ import annotations

import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

from core.errors import ServiceError
from core.settings import Settings
from infra.preflight import java_executable

# Kafka's KRaft authorizer; with no ACL for a resource, nobody but a super user may touch it.
AUTHORIZER = "org.apache.kafka.metadata.authorizer.StandardAuthorizer"
HUB_PRINCIPAL = "hub"
LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDOUT
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: INFO
      AppenderRef:
        - ref: STDOUT
    Logger:
      # Every request and every log segment roll at INFO drowns what matters.
      - name: kafka.request.logger
        level: WARN
      - name: kafka.log.LogCleaner
        level: WARN
      - name: org.apache.kafka.storage.internals.log
        level: WARN
      - name: kafka.authorizer.logger
        level: WARN
"""


# Kafka's command-line tools print records on stdout: their own log goes to stderr, warnings only.
TOOLS_LOG4J2 = """Configuration:
  Appenders:
    Console:
      name: STDERR
      target: SYSTEM_ERR
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: STDERR
"""


@dataclass(frozen=True)
class BrokerFiles:
    """Where one broker keeps its configuration and log."""

    root: Path

    @property
    def data(self) -> Path:
        return self.root / "data"

    @property
    def properties(self) -> Path:
        return self.root / "server.properties"

    @property
    def log4j(self) -> Path:
        return self.root / "log4j2.yaml"

    @property
    def tools_log4j(self) -> Path:
        return self.root / "tools-log4j2.yaml"

    @property
    def cluster_id(self) -> Path:
        return self.root / "cluster.id"

    @property
    def keystore(self) -> Path:
        return self.root / "hub-keystore.pem"


def broker_files(settings: Settings, node: int = 0) -> BrokerFiles:
    """A node's folder: ``kafka`` for a single node, ``kafka/node-K`` in a local cluster."""
    root = settings.paths.home / "kafka"
    return BrokerFiles(root if settings.broker.nodes == 1 else root / f"node-{node}")


def node_name(settings: Settings, node: int) -> str:
    """The service's name: ``broker``, or ``broker-K`` in a local cluster."""
    return "broker" if settings.broker.nodes == 1 else f"broker-{node}"


def classpath(settings: Settings) -> str:
    return f"{settings.paths.jars / 'kafka'}/*"


def check_jars(settings: Settings) -> None:
    """A clear error when `make setup` has not fetched the broker's jars."""
    jars = settings.paths.jars / "kafka"
    if not any(jars.glob("kafka_2.13-*.jar")):
        raise ServiceError(
            f"the Kafka broker's jars are missing from {jars}; run `make setup` "
            f"(it fetches them once with Maven: infra/scripts/fetch_jars.sh)"
        )


def server_properties(settings: Settings, files: BrokerFiles, node: int = 0) -> str:
    broker = settings.broker
    client, controller, tls = broker.node_ports(node)
    listeners = [f"PLAINTEXT://{broker.host}:{client}", f"CONTROLLER://127.0.0.1:{controller}"]
    advertised = [f"PLAINTEXT://{broker.host}:{client}"]
    protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
    replicas, in_sync = settings.topics.replication_factor, settings.topics.min_insync_replicas
    if broker.nodes == 1:
        quorum = [f"controller.quorum.bootstrap.servers=127.0.0.1:{controller}"]
    else:
        voters = ",".join(f"{n + 1}@127.0.0.1:{broker.node_ports(n)[1]}" for n in range(broker.nodes))
        quorum = [f"controller.quorum.voters={voters}"]
    lines = [
        "process.roles=broker,controller",
        f"node.id={node + 1}",
        *quorum,
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        f"log.dirs={files.data}",
        # Kafka's own topics are kept like the lab's.
        f"offsets.topic.replication.factor={replicas}",
        f"transaction.state.log.replication.factor={replicas}",
        f"transaction.state.log.min.isr={in_sync}",
        f"share.coordinator.state.topic.replication.factor={replicas}",
        f"share.coordinator.state.topic.min.isr={in_sync}",
        f"default.replication.factor={replicas}",
        f"min.insync.replicas={in_sync}",
        # A replica that fell out of sync never leads: acknowledged records are never given up.
        "unclean.leader.election.enable=false",
        "group.initial.rebalance.delay.ms=0",
        # Topics are created by `neurolake up` from the catalog, with their partitions and policies;
        # a typo in a client must not create one.
        "auto.create.topics.enable=false",
        f"authorizer.class.name={AUTHORIZER}",
        "allow.everyone.if.no.acl.found=false",
        f"super.users=User:ANONYMOUS;User:{HUB_PRINCIPAL}",
    ]
    if tls:
        keystore = hub_keystore(settings, files)
        ca = settings.paths.home / "tls" / "ca.pem"
        listeners.append(f"SSL://{broker.tls_host}:{tls}")
        advertised.append(f"SSL://{broker.advertised_host or broker.host}:{tls}")
        protocols.append("SSL:SSL")
        lines += [
            "listener.name.ssl.ssl.client.auth=required",
            "listener.name.ssl.ssl.keystore.type=PEM",
            f"listener.name.ssl.ssl.keystore.location={keystore}",
            "listener.name.ssl.ssl.truststore.type=PEM",
            f"listener.name.ssl.ssl.truststore.location={ca}",
            "listener.name.ssl.ssl.enabled.protocols=TLSv1.3,TLSv1.2",
            # The principal is the certificate's CN (the device id `neurolake tls issue` wrote).
            "listener.name.ssl.ssl.principal.mapping.rules=RULE:^CN=([^,]+)$/$1/,RULE:^CN=([^,]+),.*$/$1/,DEFAULT",
        ]
    lines += [
        f"listeners={','.join(listeners)}",
        f"advertised.listeners={','.join(advertised)}",
        f"listener.security.protocol.map={','.join(protocols)}",
    ]
    return "\n".join(lines) + "\n"


def hub_keystore(settings: Settings, files: BrokerFiles) -> Path:
    """The hub's key and certificate in one PEM file, as Kafka's PEM key store reads them."""
    from infra.tls import server_credentials

    credentials = server_credentials(settings)
    files.root.mkdir(parents=True, exist_ok=True)
    pem = credentials.key.read_bytes().rstrip(b"\n") + b"\n" + credentials.certificate.read_bytes()
    files.keystore.touch(mode=0o600, exist_ok=True)
    files.keystore.write_bytes(pem)
    return files.keystore


def java_command(
    settings: Settings, main_class: str, *args: str, heap: str | None = None, log4j: Path | None = None
) -> list[str]:
    files = broker_files(settings, 0)
    command = [str(java_executable(settings))]
    if heap:
        command += [f"-Xms{heap}", f"-Xmx{heap}"]
    return [
        *command,
        # The broker's work is I/O; C2's compiler threads only slowed its start on 2 cores.
        "-XX:TieredStopAtLevel=1",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j or files.log4j}",
        "-cp",
        classpath(settings),
        main_class,
        *args,
    ]


def broker_command(settings: Settings, node: int = 0) -> list[str]:
    files = broker_files(settings, node)
    return java_command(settings, "kafka.Kafka", str(files.properties), heap=settings.broker.heap, log4j=files.log4j)


def prepare(settings: Settings, node: int = 0) -> None:
    """Write a node's configuration and format its storage the first time (before each start)."""
    check_jars(settings)
    files = broker_files(settings, node)
    files.root.mkdir(parents=True, exist_ok=True)
    files.log4j.write_text(LOG4J2)
    files.properties.write_text(server_properties(settings, files, node))
    if not (files.data / "meta.properties").exists():
        # Every node of a cluster is formatted with the one cluster id.
        cluster = _cluster_id(broker_files(settings, 0))
        quorum = ["--standalone"] if settings.broker.nodes == 1 else []
        result = subprocess.run(
            java_command(
                settings,
                "kafka.tools.StorageTool",
                "format",
                *quorum,
                "--ignore-formatted",
                f"--cluster-id={cluster}",
                "-c",
                str(files.properties),
                log4j=files.log4j,
            ),
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise ServiceError(
                f"formatting the Kafka log in {files.data} failed: {(result.stderr or result.stdout).strip()[-500:]}"
            )


def _cluster_id(files: BrokerFiles) -> str:
    """The cluster's id, made once (Kafka's own format: a UUID in URL-safe base64, 22 characters).
    A cluster's nodes are prepared side by side: the first to create the file decides it."""
    import base64
    import os

    files.root.mkdir(parents=True, exist_ok=True)
    candidate = "-"
    while candidate.startswith("-"):  # as Kafka's own Uuid.randomUuid: a leading '-' reads as an option
        candidate = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
    partial = files.cluster_id.with_name(f".cluster.id.{os.getpid()}.{uuid.uuid4().hex}")
    partial.write_text(candidate + "\n")
    try:
        os.link(partial, files.cluster_id)  # atomic: fails if another node made it first
    except FileExistsError:
        pass
    finally:
        partial.unlink(missing_ok=True)
    return files.cluster_id.read_text().strip()


def console_command(settings: Settings, tool: str, *args: str) -> list[str]:
    """One of Kafka's own command-line tools (``ConsoleConsumer``, ``AclCommand``, ...) from the
    same jars, e.g. ``console_command(s, "org.apache.kafka.tools.consumer.ConsoleConsumer", ...)``."""
    files = broker_files(settings)
    files.root.mkdir(parents=True, exist_ok=True)
    files.tools_log4j.write_text(TOOLS_LOG4J2)
    return java_command(settings, tool, *args, heap="256m", log4j=files.tools_log4j)


def quorum_leader(settings: Settings, timeout_s: float = 60.0) -> int:
    """The node id (1-based) of the KRaft quorum's leader: the active controller, from Kafka's own
    ``kafka-metadata-quorum describe --status``."""
    command = console_command(
        settings,
        "org.apache.kafka.tools.MetadataQuorumCommand",
        "--bootstrap-server",
        settings.kafka.bootstrap_servers,
        "describe",
        "--status",
    )
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s)
    for line in result.stdout.splitlines():
        if line.startswith("LeaderId:"):
            return int(line.split(":", 1)[1])
    raise ServiceError(f"the KRaft quorum named no leader: {(result.stderr or result.stdout).strip()[-300:]}")
