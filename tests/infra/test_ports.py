"""Free ports for private stacks: distinct, bindable, out of the range for outgoing connections."""

from __future__ import annotations

import socket

from infra.ports import DERIVED_PORTS_ROOM, first_ephemeral_port, free_ports


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
