"""A private embedded broker (and clock service) for benchmarks, stopped when the block exits."""

from __future__ import annotations

import contextlib
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

from neurolake.settings import Settings, load_settings


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextlib.contextmanager
def private_broker(extra_env: dict[str, str] | None = None) -> Iterator[Settings]:
    from infra.stack import BrokerAndClock

    with tempfile.TemporaryDirectory(prefix="neurolake-bench-") as home:
        port = _free_port()
        env = {
            "NEUROLAKE_PATHS__HOME": str(Path(home) / "state"),
            "NEUROLAKE_BROKER__PORT": str(port),
            "NEUROLAKE_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{port}",
            "NEUROLAKE_CLOCK__PORT": str(_free_port()),
            **(extra_env or {}),
        }
        settings = load_settings(environ=env, cwd=Path(home))
        services = BrokerAndClock(settings)
        try:
            services.start()
            yield settings
        finally:
            services.stop()
