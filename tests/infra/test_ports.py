"""Free ports for private stacks: distinct, bindable, out of the range for outgoing connections."""

from __future__ import annotations

import socket

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
