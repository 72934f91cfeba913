"""Free ports for private stacks: distinct, bindable, out of the range for outgoing connections."""

from __future__ import annotations

import socket

from core.settings import default_ports
from infra.ports import DERIVED_PORTS_ROOM, first_ephemeral_port, free_ports, local_cluster_ports, port_is_free


def test_free_ports_are_distinct_bindable_and_below_the_outgoing_range() -> None:
    ports = free_ports(8)
    assert len(set(ports)) == 8
    assert all(port + DERIVED_PORTS_ROOM <= first_ephemeral_port() for port in ports)
    for port in ports:
        with socket.socket() as server:
            server.bind(("127.0.0.1", port))


def test_a_port_in_use_is_never_chosen() -> None:
    held = []
    try:
        for port in free_ports(50):
            server = socket.socket()
            server.bind(("127.0.0.1", port))
            server.listen()
            held.append(server)
        taken = {s.getsockname()[1] for s in held}
        assert not taken & set(free_ports(200))
    finally:
        for server in held:
            server.close()


def test_a_local_clusters_derived_ports_are_free_and_distinct_too() -> None:
    broker, controller, master, master_ui, *extra = ports = local_cluster_ports(extra=3, node_port_step=10)
    derived = [broker + 10, broker + 20, controller + 10, controller + 20, master + 1, master + 2]
    assert len(extra) == 3
    assert len(set(ports + derived)) == len(ports) + len(derived)
    assert all(port_is_free(port) for port in ports + derived)


def test_a_local_cluster_avoids_the_ports_its_stack_chose_before(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The test stacks choose their services' ports, then the cluster's: a worker (the master's port
    + 1) once got the port just chosen for Spark's UI, which the settings refused."""
    draws = iter([20_000, 20_050, 20_100, 20_150, 21_000, 21_050, 21_100, 21_150])

    class Rigged:
        def randrange(self, _low: int, _high: int) -> int:
            return next(draws)

    monkeypatch.setattr("infra.ports.random.SystemRandom", Rigged)
    # The first draw's master (20,100) would put worker 1 on 20,101, the UI's port.
    assert local_cluster_ports(taken={20_101}) == [21_000, 21_050, 21_100, 21_150]


def test_no_port_a_setting_defaults_to_is_chosen(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A stack overrides only the ports it starts; a chosen port equal to another setting's default
    (a controller on the presenter's 15010) made the settings refuse the clash."""
    defaults = sorted(default_ports())
    assert {15010, 19092, 19094} <= set(defaults)
    draws = iter([*defaults, *range(20_001, 20_100)])

    class Rigged:
        def randrange(self, _low: int, _high: int) -> int:
            return next(draws)

    monkeypatch.setattr("infra.ports.random.SystemRandom", Rigged)
    chosen = free_ports(3)
    assert not set(chosen) & set(defaults)
    assert len(chosen) == 3
