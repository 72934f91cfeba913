"""The embedded stack for real: started and stopped by the CLI, checked over real connections."""

from __future__ import annotations

import json
import socket
import time
import urllib.request

import psutil
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from core.errors import NeurolakeError
from core.settings import load_settings
from infra.airflow_api import AirflowApi
from infra.ports import port_is_free
from schemas.catalog import TOPICS
from schemas.codec import default_codec
from tests.integration.conftest import Cli
from tests.schemas.samples import sample_records

pytestmark = pytest.mark.integration


def _service_tree(status: dict) -> list[psutil.Process]:
    processes = []
    for info in status["services"].values():
        if info["pid"]:
            root = psutil.Process(info["pid"])
            processes += [root, *root.children(recursive=True)]
    return processes


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    return [p for p in processes if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]


@pytest.mark.slow
def test_up_status_topics_down_with_airflow(cli: Cli) -> None:
    result = cli("up", "--with-airflow")
    assert result.returncode == 0, result.stderr
    status = json.loads(cli("status", "--json").stdout)
    assert status["healthy"], status
    assert {name for name, s in status["services"].items() if s["healthy"]} == {"broker", "clock", "mlflow", "airflow"}
    tree = _service_tree(status)
    assert len(tree) >= 5  # airflow alone runs scheduler, api server, dag processor, triggerer

    settings = load_settings(environ=cli.env, cwd=cli.home)
    # Topics exist with the configured partition counts; `sessions` is compacted.
    topics = {t["name"]: t for t in json.loads(cli("topics", "--json").stdout)}
    for spec in TOPICS.values():
        assert topics[spec.name]["partitions"] == settings.topics.partitions_for(spec.name)
    assert topics["sessions"]["cleanup_policy"] == "compact"

    # A record produced with the codec comes back over a real connection.
    codec = default_codec()
    producer = Producer(settings.kafka.producer_config())
    payload = codec.encode("marker", sample_records()["marker"])
    producer.produce("markers", key=b"s1", value=payload, partition=0)
    assert producer.flush(10) == 0
    consumer = Consumer({**settings.kafka.client_config(), "group.id": "t", "enable.auto.commit": False})
    consumer.assign([TopicPartition("markers", 0, 0)])
    message = consumer.poll(10)
    consumer.close()
    assert message is not None and message.error() is None
    assert codec.decode(message.value())[1] == sample_records()["marker"]

    # MLflow answers its REST API.
    with urllib.request.urlopen(
        f"{settings.mlflow.effective_tracking_uri}/api/2.0/mlflow/experiments/search?max_results=1",
        timeout=10,
    ) as response:
        assert response.status == 200

    # Airflow answers its REST API as the demo drives it (a token from the simple auth manager).
    api = AirflowApi(settings)
    deadline = time.monotonic() + 90
    while True:  # the DAG processor may not have parsed the DAGs yet
        try:
            api.set_paused("retrain", True)
            break
        except NeurolakeError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    with pytest.raises(NeurolakeError, match="HTTP 404"):
        api.run("retrain", "no-such-run")

    again = cli("up", "--with-airflow")
    assert again.returncode == 0, again.stderr
    assert "already running" in again.stderr
    assert (
        json.loads(cli("status", "--json").stdout)["services"]["broker"]["pid"] == (status["services"]["broker"]["pid"])
    )

    down = cli("down")
    assert down.returncode == 0, down.stderr
    time.sleep(0.5)
    assert _alive(tree) == []
    for port in (settings.broker.port, settings.mlflow.port, settings.airflow.port):
        assert port_is_free(port)
    assert not list(settings.paths.run_dir.glob("*.pid"))
    assert cli("status").returncode == 1


def test_port_in_use_starts_nothing(cli: Cli) -> None:
    settings = load_settings(environ=cli.env, cwd=cli.home)
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", settings.mlflow.port))
        squatter.listen()
        result = cli("up")
    assert result.returncode == 2
    assert f"port {settings.mlflow.port} (mlflow.port) is already in use" in result.stderr
    assert "NEUROLAKE_MLFLOW__PORT" in result.stderr
    # The broker's port was free, but nothing may be half-started.
    assert port_is_free(settings.broker.port)
    assert not list(settings.paths.run_dir.glob("*.pid"))


def test_a_stack_that_fails_to_start_leaves_nothing_running(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A caller's teardown never comes for a stack whose start raised: the start stops what it had
    started itself (a local cluster whose worker failed once kept its brokers for the rest of a run)."""
    from core.errors import ServiceError
    from tests.integration.conftest import BrokerStack

    stack = BrokerStack(tmp_path)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as taken:  # the clock's port, held by another
        taken.bind(("127.0.0.1", stack.settings.clock.port))
        with pytest.raises(ServiceError, match="clock.port"):
            stack.start()
    assert stack.supervisor.running_process(stack.broker.name) is None
    assert port_is_free(stack.settings.broker.port)
