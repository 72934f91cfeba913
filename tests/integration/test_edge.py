"""Edge producers against the real embedded broker: exact counts, outages, crashes, bad input."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Producer

from edge_producers.spool import Spool
from schemas.codec import default_codec, eeg_block_device_times, eeg_block_samples
from schemas.signing import Keyring, ensure_key
from tests.integration.conftest import BrokerStack, hub_signed, read_topic, signed

pytestmark = pytest.mark.integration
CODEC = default_codec()


def _decode(messages) -> list[dict]:
    """The records on a topic, each once. The edge sends at least once (its producer is not
    idempotent on this broker, so a retried send can land twice) and bronze drops the copies by
    (device, seq); a copy must be the very same record."""
    records: dict[tuple, dict] = {}
    for message in messages:
        record = CODEC.decode(message.value())[1]
        key = (record["device_id"], record["seq"])
        assert records.setdefault(key, record) == record, f"two different records share {key}"
    return list(records.values())


def _decodable(messages) -> list[dict]:
    records = []
    for message in messages:
        try:
            records.append(CODEC.decode(message.value())[1])
        except ValueError:
            continue
    return records


def _edge_run(broker: BrokerStack, cwd: Path, duration: str, **env: str) -> subprocess.Popen:
    log_file = _log_file(broker, f"edge-run-{time.time_ns()}")
    process = subprocess.Popen(
        [*broker.cli_argv, "edge", "run", "--duration", duration],
        env={**broker.env, **env},
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=log_file,
        text=True,
    )
    process.log_file = log_file  # type: ignore[attr-defined]
    return process


def _run_simulator(broker: BrokerStack, *args: str, timeout: float = 180) -> dict:
    process = broker.neurolake("edge", "simulate", *args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = process.communicate(timeout=timeout)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out)


def _stderr_of(process: subprocess.Popen) -> str:
    log_file = process.log_file  # type: ignore[attr-defined]
    log_file.seek(0)
    return log_file.read()


def _log_file(broker: BrokerStack, name: str):
    # A file, not a pipe: a pipe nobody reads fills up and blocks the producer's logging.
    return open(broker.home / f"{name}.log", "w+")


@pytest.mark.slow
def test_thirty_seconds_exact_samples_and_ssvep_matches_markers(broker: BrokerStack) -> None:
    # A clear response (0 dB): this checks that the flicker and the markers line up, not a decoder
    # (at the realistic default a plain spectrum misses a trial now and then, as real data would).
    broker.env["NEUROLAKE_EDGE__SIMULATION__SSVEP_SNR_DB"] = "0"
    summary = _run_simulator(broker, "--headsets", "1", "--duration", "30", "--stimulus")
    device = summary["devices"][0]
    blocks = sorted(_decode(read_topic(broker.settings, "eeg.raw")), key=lambda b: b["seq"])
    assert [b["seq"] for b in blocks] == list(range(device["next_seq"]["eeg.raw"]))
    assert sum(b["n_samples"] for b in blocks) == device["samples"]
    assert abs(device["samples"] - 30 * 250) <= 0.02 * 30 * 250
    index = 0
    for block in blocks:
        assert block["first_sample_index"] == index
        index += block["n_samples"]

    sessions = _decode(read_topic(broker.settings, "sessions", idle_s=1))
    assert len(sessions) == 1
    names = sessions[0]["channel_names"]
    samples = np.vstack([eeg_block_samples(b) for b in blocks])
    lab_times = np.concatenate([eeg_block_device_times(b) + b["clock_offset_us"] for b in blocks])
    markers = _decode(read_topic(broker.settings, "markers", idle_s=1))
    starts = {m["trial"]: m for m in markers if m["event"] == "START"}
    ends = {m["trial"]: m for m in markers if m["event"] == "END"}
    assert len(starts) >= 4 and set(starts) == set(ends)
    classes = sorted({m["stimulus_hz"] for m in markers})
    occipital = [names.index("O1"), names.index("O2")]
    correct = 0
    for trial, start in starts.items():
        inside = (lab_times >= start["timestamp_us"]) & (lab_times < ends[trial]["timestamp_us"])
        segment = samples[inside][:, occipital].mean(axis=1)
        segment = segment - segment.mean()
        spectrum = np.abs(np.fft.rfft(segment * np.hanning(len(segment))))
        freqs = np.fft.rfftfreq(len(segment), 1 / 250)
        power = [spectrum[np.argmin(np.abs(freqs - hz))] for hz in classes]
        correct += classes[int(np.argmax(power))] == start["stimulus_hz"]
    assert correct == len(starts), f"{correct}/{len(starts)} trials show their flicker"


@pytest.mark.slow
def test_broker_down_for_20s_then_restarted_loses_nothing(broker: BrokerStack) -> None:
    stderr = _log_file(broker, "outage")
    process = broker.simulate(1, 75, stderr=stderr)
    try:
        time.sleep(8)
        broker.stop_broker()
        time.sleep(20)
        broker.start_broker()
        time.sleep(10)
        # Acknowledge, as the lake will, what is on the topic now: the spool must drain.
        blocks = _decode(read_topic(broker.settings, "eeg.raw", idle_s=1, max_s=5))
        seqs = {b["seq"] for b in blocks}
        contiguous = -1
        while contiguous + 1 in seqs:
            contiguous += 1
        assert contiguous > 100, "records from before the outage were not resent"
        ack = {
            "device_id": "sim-000",
            "session_id": None,
            "seq": 1,
            "issued_us": time.time_ns() // 1000,
            "kind": "SPOOL_ACK",
            "command_id": "ack-1",
            "sender": "test",
            "config": {},
            "acked_topic": "eeg.raw",
            "acked_seq": contiguous,
            "acked_epoch": blocks[0]["spool_epoch"],
            "in_reply_to": None,
            "ok": None,
            "message": None,
        }
        producer = Producer(broker.settings.kafka.producer_config())
        # A forged ack first (unsigned, for everything): it must delete nothing.
        forged = {**ack, "acked_seq": 2**40, "command_id": "forged"}
        producer.produce("devices.control", key=b"sim-000", value=CODEC.encode("control", forged))
        # The lake acknowledges after every commit, so an ack is sent again until the Pi stops.
        resent, deadline = 0, time.monotonic() + 120
        while process.poll() is None and time.monotonic() < deadline:
            ack = {**ack, "issued_us": time.time_ns() // 1000, "command_id": f"ack-{resent}"}
            producer.produce(
                "devices.control",
                key=b"sim-000",
                value=hub_signed(broker.settings, CODEC.encode("control", ack), "sim-000"),
            )
            assert producer.flush(10) == 0
            resent += 1
            time.sleep(5)
        out, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
    stderr.seek(0)
    log_tail = stderr.read()[-3000:]
    assert process.returncode == 0, log_tail
    summary = json.loads(out)
    device = summary["devices"][0]
    assert summary["transport"]["outages"] >= 1
    assert summary["acks_applied"] >= 1, f"{summary}\n{log_tail}"
    blocks = _decode(read_topic(broker.settings, "eeg.raw"))
    assert {b["seq"] for b in blocks} == set(range(device["next_seq"]["eeg.raw"]))
    spool = Spool(broker.settings.edge.spool.directory / "sim-000.sqlite", 10**9)
    left = [r.seq for r in spool.fetch_after(0, 10**6) if r.topic == "eeg.raw"]
    spool.close()
    assert left and min(left) == contiguous + 1, "acknowledged records stayed in the spool"


@pytest.mark.slow
def test_sigkill_and_restart_loses_nothing_spooled(broker: BrokerStack) -> None:
    process = broker.neurolake(
        "edge", "simulate", "--headsets", "1", "--duration", "60", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    time.sleep(8)
    broker.stop_broker()  # so that part of the spool is still undelivered at the kill
    time.sleep(3)
    process.send_signal(signal.SIGKILL)
    process.wait(10)
    spool_path = broker.settings.edge.spool.directory / "sim-000.sqlite"
    spool = Spool(spool_path, 10**9)
    spooled = {r.seq for r in spool.fetch_after(0, 10**6) if r.topic == "eeg.raw"}
    undelivered = spool.stats().undelivered
    spool.close()
    assert undelivered > 0 and spooled
    broker.start_broker()  # what the broker never took must come from the spool
    summary = _run_simulator(broker, "--headsets", "1", "--duration", "8")
    blocks = _decode(read_topic(broker.settings, "eeg.raw"))
    on_topic = {b["seq"] for b in blocks}
    assert spooled <= on_topic
    # Numbering went on where the killed process stopped: no seq reused, no gap.
    assert on_topic == set(range(summary["devices"][0]["next_seq"]["eeg.raw"]))
    sessions = {b["session_id"] for b in blocks}
    assert len(sessions) == 2


def test_bad_input_is_refused_and_the_producer_keeps_running(broker: BrokerStack, tmp_path: Path) -> None:
    bad_board = _edge_run(broker, tmp_path, "1", NEUROLAKE_EDGE__BOARD="muse")
    assert bad_board.wait(60) == 2 and "edge.board" in _stderr_of(bad_board)
    no_port = _edge_run(broker, tmp_path, "1", NEUROLAKE_EDGE__BOARD="cyton")
    assert no_port.wait(60) == 2 and "needs edge.serial_port" in _stderr_of(no_port)

    no_key = _edge_run(broker, tmp_path, "1", NEUROLAKE_EDGE__DEVICE_ID="pi-unregistered")
    assert no_key.wait(60) == 2 and "neurolake edge setup" in _stderr_of(no_key)

    ensure_key(Keyring(broker.settings.security.keyring), "pi-bad")
    process = _edge_run(
        broker, tmp_path, "12", NEUROLAKE_EDGE__CAMERA__SOURCE="picamera2", NEUROLAKE_EDGE__DEVICE_ID="pi-bad"
    )
    # The listener reads from the end of the topic: what is sent before it follows the topic is not
    # for it (a slow start under load once took 16 s).
    deadline = time.monotonic() + 60
    log_path = Path(process.log_file.name)  # type: ignore[attr-defined]
    while "control listener following devices.control" not in log_path.read_text():
        # Read by path: a seek on the shared file would move the process's own write position.
        assert process.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.2)
    producer = Producer(broker.settings.kafka.producer_config())
    producer.produce("devices.control", key=b"pi-bad", value=b"\x00not avro at all")
    producer.produce(
        "devices.control",
        key=b"pi-bad",
        value=CODEC.encode(
            "marker", {"device_id": "x", "session_id": "s", "seq": 0, "timestamp_us": 0, "event": "START", "label": "l"}
        ),
    )
    command = {
        "device_id": "pi-bad",
        "session_id": None,
        "seq": 1,
        "issued_us": time.time_ns() // 1000,
        "kind": "SET_CONFIG",
        "command_id": "cfg-1",
        "sender": "test",
        "config": {"serial_port": "/dev/x"},
        "acked_topic": None,
        "acked_seq": None,
        "in_reply_to": None,
        "ok": None,
        "message": None,
    }
    producer.produce(
        "devices.control", key=b"pi-bad", value=hub_signed(broker.settings, CODEC.encode("control", command), "pi-bad")
    )
    # Forged commands: unsigned, and signed with the device's key as the device signs (a reflection).
    stop = {**command, "kind": "STOP", "command_id": "forged-stop", "config": {}}
    producer.produce("devices.control", key=b"pi-bad", value=CODEC.encode("control", stop))
    shutdown = {**command, "kind": "SHUTDOWN", "command_id": "forged-shutdown", "config": {}}
    producer.produce(
        "devices.control",
        key=b"pi-bad",
        value=signed(broker.settings, "devices.control", CODEC.encode("control", shutdown), "pi-bad"),
    )
    producer.flush(10)
    out, _ = process.communicate(timeout=60)
    err = _stderr_of(process)
    assert process.returncode == 0, err[-2000:]
    summary = json.loads(out)
    assert summary["control_refused"] == 4
    device = summary["devices"][0]
    assert device["samples"] > 2000  # EEG kept flowing without the camera, and no forged STOP stopped it
    assert "picamera2 is not installed" in err
    acks = [
        r for r in _decodable(read_topic(broker.settings, "devices.acks", idle_s=1)) if r.get("kind") == "COMMAND_ACK"
    ]
    assert acks and acks[0]["in_reply_to"] == "cfg-1" and acks[0]["ok"] is False
    assert "cannot change serial_port live" in acks[0]["message"]
    statuses = _decode(read_topic(broker.settings, "devices.status", idle_s=1))
    assert any(s["state"] == "DEGRADED" for s in statuses)
    logs = _decode(read_topic(broker.settings, "devices.logs", idle_s=1))
    assert any("refused control message: unsigned record" in line["message"] for line in logs)


def test_the_hub_commands_a_pi_only_through_signed_commands_within_the_settings_bounds(broker: BrokerStack) -> None:
    process = broker.simulate(1, 40, "--stimulus", stderr=_log_file(broker, "commanded"))
    try:
        time.sleep(6)

        def command(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [*broker.cli_argv, "command", "sim-000", *args, "--wait", "15"],
                env=broker.env,
                cwd=broker.home,
                capture_output=True,
                text=True,
                timeout=60,
            )

        spin = command("SET_CONFIG", "--set", "stimulus.stimulus_s=1e-7", "--set", "stimulus.rest_s=0")
        assert spin.returncode == 1 and '"ok": false' in spin.stdout and "stimulus.stimulus_s" in spin.stdout
        shutdown = command("SHUTDOWN")
        assert shutdown.returncode == 1 and "allow_remote_shutdown" in shutdown.stdout
        applied = command("SET_CONFIG", "--set", "stimulus.rest_s=3")
        assert applied.returncode == 0 and '"ok": true' in applied.stdout, applied.stdout + applied.stderr
        stop = command("STOP")
        assert stop.returncode == 0, stop.stdout + stop.stderr
        out, _ = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
    summary = json.loads(out)
    assert summary["devices"][0]["state"] == "STOPPED"
    unknown = subprocess.run(
        [*broker.cli_argv, "command", "pi-nobody", "STOP"],
        env=broker.env,
        cwd=broker.home,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert unknown.returncode == 2 and "no active key for 'pi-nobody'" in unknown.stderr


def test_a_control_message_that_breaks_its_handler_does_not_stop_the_listener(broker: BrokerStack) -> None:
    """Nor does an outage make it read again what it had passed over: a fresh consumer resumes where
    the listener stood, even in a partition it had read nothing from."""
    from confluent_kafka import KafkaError

    from edge_producers.control import ControlListener
    from schemas.catalog import CONTROL
    from schemas.records import control_record
    from schemas.timebase import now_us

    handled: list[str] = []

    def handler(record: dict) -> None:
        if record["command_id"] == "poison":
            raise RuntimeError("a handler bug")
        handled.append(record["command_id"])

    producer = Producer(broker.settings.kafka.producer_config())

    def send(*command_ids: str) -> None:
        for command_id in command_ids:
            record = control_record(
                device_id="sim-000", kind="STOP", sender="test", issued_us=now_us(), command_id=command_id
            )
            producer.produce(
                CONTROL, key=b"sim-000", value=hub_signed(broker.settings, CODEC.encode("control", record), "sim-000")
            )
        assert producer.flush(10) == 0

    keyring = Keyring(broker.settings.security.keyring)
    ensure_key(keyring, "sim-000")
    send("before")  # on the topic before the listener follows it: not for this listener
    listener = ControlListener(broker.settings.kafka.client_config(), CONTROL, CODEC, handler, 0, keyring, {"sim-000"})
    listener.start()
    try:
        assert listener.following.wait(60), "the listener never got devices.control's partitions"
        listener.following.clear()
        # What librdkafka reports when every broker is gone: the listener starts a fresh consumer.
        listener.on_client_error(KafkaError(KafkaError._ALL_BROKERS_DOWN))
        assert listener.following.wait(60), "no fresh consumer took devices.control's partitions"
        send("poison", "after")
        deadline = time.monotonic() + 15
        while "after" not in handled and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        listener.stop()
    assert handled == ["after"] and listener.failures == 1
