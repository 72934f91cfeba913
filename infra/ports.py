"""Free local ports for private stacks (tests, benchmarks)."""

from __future__ import annotations

import contextlib
import random
import socket
from collections.abc import Collection
from pathlib import Path

from core.settings import default_ports

# Below the kernel's range for outgoing connections (Linux: /proc/sys/net/ipv4/ip_local_port_range).
LOWEST_PORT = 10_000
EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
# Room above a chosen port for the ports a stack derives from it (a local cluster's nodes at + 10 k,
# its workers at the master's + n), so that those stay out of the outgoing range too.
DERIVED_PORTS_ROOM = 100


def first_ephemeral_port() -> int:
    try:
        return int(EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default


def free_ports(count: int) -> list[int]:
    """``count`` distinct free TCP ports on 127.0.0.1, chosen below the range the kernel hands to
    outgoing connections: a port from that range, free when chosen, can become some client socket's
    local port before the service binds it (a local cluster's worker once found its port taken so).
    The probes stay bound until all are chosen, so no port is handed out twice. No port a setting
    defaults to is chosen: the stack keeps the defaults it does not override."""
    reserved = default_ports()
    highest = first_ephemeral_port() - DERIVED_PORTS_ROOM
    if highest - LOWEST_PORT < 1_000 * count:  # an unusual range: let the kernel choose
        return _kernel_chosen_ports(count, reserved)
    pick = random.SystemRandom()
    chosen: list[int] = []
    with contextlib.ExitStack() as stack:
        while len(chosen) < count:
            port = pick.randrange(LOWEST_PORT, highest)
            if port in chosen or port in reserved:
                continue
            probe = stack.enter_context(socket.socket())
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:  # in use
                continue
            chosen.append(port)
    return chosen


def local_cluster_ports(
    extra: int = 0, nodes: int = 3, workers: int = 2, node_port_step: int = 10, taken: Collection[int] = ()
) -> list[int]:
    """Free ports for a private local cluster: the broker's, the controller's, the Spark master's
    and its UI's, then ``extra`` more; chosen so that the ports the cluster derives from them (node
    k's at + k * node_port_step, worker n's at the master's + n: core/settings.py) are free and
    distinct too, and none is in ``taken`` (ports chosen for the same stack by an earlier call, free
    until their services bind them: a worker once got the port chosen for Spark's UI)."""
    reserved = default_ports() | set(taken)
    while True:
        ports = free_ports(4 + extra)
        broker, controller, master = ports[:3]
        derived = [port + node_port_step * k for port in (broker, controller) for k in range(1, nodes)]
        derived += [master + n for n in range(1, workers + 1)]
        distinct = len(set(ports + derived)) == len(ports) + len(derived)
        if distinct and not reserved & set(ports + derived) and all(map(port_is_free, derived)):
            return ports


def port_is_free(port: int, host: str = "127.0.0.1", kind: int = socket.SOCK_STREAM) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def _kernel_chosen_ports(count: int, reserved: frozenset[int]) -> list[int]:
    chosen: list[int] = []
    with contextlib.ExitStack() as stack:  # a reserved port stays bound, so it is not offered again
        while len(chosen) < count:
            probe = stack.enter_context(socket.socket())
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
            if port not in reserved:
                chosen.append(port)
    return chosen
