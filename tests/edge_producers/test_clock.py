import threading

from edge_producers.clock import ClockProbe, ProbeSample, best_estimate
from infra.clock_server import serve_clock
from tests.conftest import free_port


def test_offset_and_round_trip_maths() -> None:
    # Device clock 1000 us behind the hub; 200 us each way; hub holds it 50 us.
    sample = ProbeSample(t0_us=0, t1_us=1200, t2_us=1250, t3_us=450)
    assert sample.offset_us == 1000
    assert sample.rtt_us == 400


def test_lowest_round_trip_wins() -> None:
    noisy = ProbeSample(0, 5000, 5000, 2000)  # asymmetric delay, rtt 2000
    clean = ProbeSample(0, 1100, 1100, 200)  # rtt 200, offset 1000
    estimate = best_estimate([noisy, clean])
    assert estimate is not None and estimate.offset_us == 1000 and estimate.rtt_us == 200
    assert best_estimate([]) is None


def test_probe_against_the_hub_service_finds_a_skewed_clock() -> None:
    port = free_port()
    server = threading.Thread(target=serve_clock, args=("127.0.0.1", port, 3.0), daemon=True)
    server.start()
    import time

    skew = -250_000  # this "device" runs 250 ms behind the hub
    probe = ClockProbe(
        "127.0.0.1", port, probes_per_round=8, timeout_s=0.5, clock=lambda: time.time_ns() // 1000 + skew
    )
    estimate = None
    for _ in range(20):
        estimate = probe.probe_round()
        if estimate is not None:
            break
        time.sleep(0.1)
    assert estimate is not None
    assert abs(estimate.offset_us - 250_000) <= estimate.rtt_us / 2 + 1000
    server.join()


def test_no_hub_is_not_an_error() -> None:
    probe = ClockProbe("127.0.0.1", free_port(), probes_per_round=2, timeout_s=0.05)
    assert probe.probe_round() is None
    assert probe.estimate.rtt_us == -1


def _fake_hub(reply_from_other_port: bool, shift_us: int) -> tuple[int, threading.Thread]:
    """Answers one round of probes: from another port (a spoofer's trick) or with a shifted time."""
    import socket

    from schemas.clock_wire import MAGIC, REPLY, REQUEST

    server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    server.bind(("127.0.0.1", 0))
    server.settimeout(2)
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def answer() -> None:
        import time

        try:
            for _ in range(2):
                data, address = server.recvfrom(64)
                _, t0 = REQUEST.unpack(data)
                now = time.time_ns() // 1000 + shift_us
                (other if reply_from_other_port else server).sendto(REPLY.pack(MAGIC, t0, now, now), address)
        except OSError:
            pass
        finally:
            server.close()
            other.close()

    thread = threading.Thread(target=answer, daemon=True)
    thread.start()
    return server.getsockname()[1], thread


def test_replies_from_another_address_or_with_an_implausible_offset_are_refused() -> None:
    port, thread = _fake_hub(reply_from_other_port=True, shift_us=0)
    assert ClockProbe("127.0.0.1", port, probes_per_round=2, timeout_s=0.3).probe_round() is None
    thread.join()
    port, thread = _fake_hub(reply_from_other_port=False, shift_us=3_600_000_000)  # an hour ahead
    probe = ClockProbe("127.0.0.1", port, probes_per_round=2, timeout_s=0.3, max_offset_us=600_000_000)
    assert probe.probe_round() is None and probe.replies_refused == 2
    assert probe.estimate.offset_us == 0  # lab time untouched
    thread.join()
