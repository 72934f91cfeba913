"""Transport security by Kafka itself: the broker's TLS listener admits only certificates of the lab
CA, takes each certificate's CN as its principal and holds a Pi to its ACLs; Kafka's own console
consumer reads our topics."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from infra.kafka_broker import console_command
from schemas.catalog import COMMAND_ACKS, CONTROL, EDGE_CONTROL_GROUP, EEG_RAW
from tests.conftest import free_port
from tests.integration.conftest import BrokerStack

pytestmark = pytest.mark.integration


def _pi_config(tls_port: int, tls: Path, device: str | None) -> dict[str, object]:
    config: dict[str, object] = {
        "bootstrap.servers": f"localhost:{tls_port}",
        "security.protocol": "SSL",
        "ssl.ca.location": str(tls / "ca.pem"),
        "socket.timeout.ms": 5000,
        "message.timeout.ms": 8000,
    }
    if device is not None:
        config["ssl.certificate.location"] = str(tls / f"{device}.pem")
        config["ssl.key.location"] = str(tls / f"{device}.key")
    return config


def _produce(config: dict[str, object], topic: str) -> KafkaError | None:
    """Deliver one record; the delivery error, or None when the broker took it."""
    outcome: list[KafkaError | None] = []
    producer = Producer({**config, "enable.idempotence": True})
    producer.produce(topic, b"x", on_delivery=lambda error, _message: outcome.append(error))
    producer.flush(15)
    return outcome[0] if outcome else KafkaError(KafkaError._MSG_TIMED_OUT)


def _read_error(config: dict[str, object], topic: str) -> KafkaError | None:
    """The error a fetch from ``topic`` gets (None when it is allowed, even with nothing to read)."""
    consumer = Consumer({**config, "group.id": EDGE_CONTROL_GROUP, "enable.auto.commit": False})
    try:
        consumer.assign([TopicPartition(topic, 0, 0)])
        for _ in range(20):
            message = consumer.poll(0.5)
            if (
                message is not None
                and message.error() is not None
                and message.error().code() != KafkaError._PARTITION_EOF
            ):
                return message.error()
            if message is not None and message.error() is None:
                return None
        return None
    except KafkaException as exc:
        return exc.args[0]
    finally:
        consumer.close()


def test_certificates_principals_and_acls_are_kafkas_own(tmp_path: Path) -> None:
    tls_port = free_port()
    stack = BrokerStack(tmp_path, NEUROLAKE_BROKER__TLS_PORT=str(tls_port), NEUROLAKE_BROKER__TLS_HOST="127.0.0.1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*stack.cli_argv, *args], env=stack.env, capture_output=True, text=True, timeout=120)

    init = run("tls", "init")
    assert init.returncode == 0, init.stderr
    stack.start()
    try:
        for device in ("pi-3", "pi-4"):
            issued = run("tls", "issue", device, "--out", str(tmp_path / f"{device}-tls"))
            assert issued.returncode == 0, issued.stderr
            assert "granted now" in issued.stdout
        tls = stack.settings.paths.home / "tls"
        # What the Pi holds: the folder `tls issue` made for it.
        pi = _pi_config(tls_port, tmp_path / "pi-3-tls", "pi-3")

        # The Pi writes its data topics and its command acks, reads the hub's control records...
        assert _produce(pi, EEG_RAW) is None
        assert _produce(pi, COMMAND_ACKS) is None
        assert _read_error(pi, CONTROL) is None
        # ...and never writes a command or reads another topic: the broker refuses.
        refused = _produce(pi, CONTROL)
        assert refused is not None and refused.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, refused
        read = _read_error(pi, EEG_RAW)
        assert read is not None and read.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, read

        # A client without a certificate of our CA never gets past the handshake.
        anonymous = _produce(_pi_config(tls_port, tls, None), EEG_RAW)
        assert anonymous is not None, "a certificate-less client was let in"

        # Kafka's own console consumer, from the broker's jars, reads our topics (the hub's listener).
        consumed = subprocess.run(
            console_command(
                stack.settings,
                "org.apache.kafka.tools.consumer.ConsoleConsumer",
                "--bootstrap-server",
                stack.settings.kafka.bootstrap_servers,
                "--topic",
                EEG_RAW,
                "--from-beginning",
                "--max-messages",
                "1",
                "--timeout-ms",
                "20000",
            ),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert consumed.returncode == 0, consumed.stderr[-2000:]
        assert consumed.stdout.strip() == "x"

        # A lost Pi: revoking its certificate takes back its ACLs at once, so the broker refuses the
        # certificate the topics it wrote a moment ago; its name cannot be issued again.
        revoked = run("tls", "revoke", "pi-3")
        assert revoked.returncode == 0, revoked.stderr
        assert "broker ACL(s) removed now" in revoked.stdout, revoked.stdout
        after = _produce(pi, EEG_RAW)
        assert after is not None and after.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, after
        again = run("tls", "issue", "pi-3")
        assert again.returncode != 0 and "issue it under a new name" in again.stderr, again.stderr

        # Revoked while the broker is down: its ACLs go when the broker starts again.
        pi_4 = _pi_config(tls_port, tmp_path / "pi-4-tls", "pi-4")
        assert _produce(pi_4, EEG_RAW) is None
        stack.stop_broker()
        offline = run("tls", "revoke", "pi-4")
        assert offline.returncode == 0 and "at the next `neurolake up`" in offline.stdout, offline.stdout
        stack.start_broker()
        after = _produce(pi_4, EEG_RAW)
        assert after is not None and after.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED, after
    finally:
        stack.stop()
