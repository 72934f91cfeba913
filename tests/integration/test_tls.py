"""The Pi -> hub link through TLS with client certificates (stunnel on both ends, real broker)."""

from __future__ import annotations

import json
import socket
import ssl
import struct
import subprocess
import time
from pathlib import Path

import pytest

from infra.processes import ServiceSpec
from infra.stack import tunnel_spec
from infra.tls import init_ca, issue
from schemas.codec import default_codec
from tests.conftest import free_port
from tests.integration.conftest import BrokerStack, read_topic

pytestmark = pytest.mark.integration

PI_ADDRESS = "127.0.0.3"  # the "Pi" listens here: the broker's advertised address, not the hub's own


def _broker_answers(
    tls_port: int, ca: Path, certificate: Path | None = None, key: Path | None = None, plaintext: bool = False
) -> bool:
    """Whether a Kafka ApiVersions request through the hub's TLS port gets the broker's answer."""
    request = struct.pack(">hhih", 18, 0, 7, 4) + b"test"
    try:
        with socket.create_connection(("127.0.0.1", tls_port), timeout=5) as raw:
            if plaintext:
                raw.sendall(struct.pack(">i", len(request)) + request)
                return len(raw.recv(4)) == 4
            context = ssl.create_default_context(cafile=str(ca))
            context.check_hostname = False
            if certificate is not None:
                context.load_cert_chain(str(certificate), str(key))
            with context.wrap_socket(raw) as tls:
                tls.sendall(struct.pack(">i", len(request)) + request)
                return len(tls.recv(4)) == 4
    except (OSError, ssl.SSLError):
        return False


def test_a_pi_with_its_certificate_streams_through_tls_and_clients_without_one_are_refused(tmp_path: Path) -> None:
    tls_port = free_port()
    stack = BrokerStack(
        tmp_path,
        NEUROLAKE_BROKER__ADVERTISED_HOST=PI_ADDRESS,
        NEUROLAKE_BROKER__TLS_PORT=str(tls_port),
        NEUROLAKE_BROKER__TLS_HOST="127.0.0.1",
    )
    hub_env = stack.env
    init = subprocess.run([*stack.cli_argv, "tls", "init"], env=hub_env, capture_output=True, text=True, timeout=60)
    assert init.returncode == 0, init.stderr
    pi_home = tmp_path / "pi"
    issued = subprocess.run(
        [*stack.cli_argv, "tls", "issue", "sim-000", "--out", str(pi_home / "tls")],
        env=hub_env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert issued.returncode == 0, issued.stderr
    pi_env = {
        **hub_env,
        "NEUROLAKE_PATHS__HOME": str(pi_home),
        "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"{PI_ADDRESS}:{stack.settings.broker.port}",
    }
    pi_tunnel = ServiceSpec(
        "pi-tunnel",
        [
            *stack.cli_argv,
            "tls",
            "tunnel",
            "--hub",
            f"127.0.0.1:{tls_port}",
            "--device",
            "sim-000",
            "--listen",
            f"{PI_ADDRESS}:{stack.settings.broker.port}",
        ],
        {},
        lambda: True,
        env=pi_env,
        startup_timeout_s=5,
    )
    hub_tunnel = tunnel_spec(stack.settings)
    try:
        stack.supervisor.start(pi_tunnel)
        stack.supervisor.start(hub_tunnel)
        stack.start()  # broker, clock, topics (this admin client follows the advertised address too)
        simulated = subprocess.run(
            [*stack.cli_argv, "edge", "simulate", "--headsets", "1", "--duration", "6"],
            env=pi_env,
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert simulated.returncode == 0, simulated.stderr[-3000:]
        device = json.loads(simulated.stdout)["devices"][0]
        assert device["spool"]["undelivered"] == 0
        blocks = {default_codec().decode(m.value())[1]["seq"] for m in read_topic(stack.settings, "eeg.raw")}
        assert blocks == set(range(device["next_seq"]["eeg.raw"]))

        ca = stack.settings.paths.home / "tls" / "ca.pem"
        pi_certificate, pi_key = pi_home / "tls" / "sim-000.pem", pi_home / "tls" / "sim-000.key"
        # The Pi's own certificate gets the broker's answer through the hub's TLS port...
        assert _broker_answers(tls_port, ca, pi_certificate, pi_key)
        # ... a client without a certificate, in plaintext, or with another CA's certificate does not.
        assert not _broker_answers(tls_port, ca)
        assert not _broker_answers(tls_port, ca, plaintext=True)
        init_ca(tmp_path / "rogue")
        rogue = issue(tmp_path / "rogue", "sim-000", server=False)
        assert not _broker_answers(tls_port, ca, rogue.certificate, rogue.key)
        log = stack.supervisor.log_file("tunnel").read_text()
        assert "peer did not return a certificate" in log or "certificate" in log.lower()
    finally:
        stack.stop()
        stack.supervisor.stop(hub_tunnel)
        stack.supervisor.stop(pi_tunnel)
        time.sleep(0.1)
