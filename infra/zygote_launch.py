"""The Python that Spark starts when a zygote serves it (see ``infra/python_zygote.py``).

Run as a script with ``-S -E``: it imports only the standard library, so it starts in ~15 ms. It
hands its arguments, environment, directory and standard streams to the zygote, which forks a child
that runs the requested module. This process stays what Spark started: it passes SIGTERM, SIGINT and
SIGHUP on to the child and exits with the child's status. Anything the zygote does not serve runs on
this interpreter instead, with the arguments Spark gave.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct
import sys
import time
from typing import NoReturn

# The zygote's socket; infra/python_zygote.py sets it from here.
SOCKET_ENV = "NEUROLAKE_PYTHON_ZYGOTE"


def real_python(argv: list[str]) -> NoReturn:
    # The -S -E this script runs with are for it alone; the module gets a normal interpreter.
    os.execv(sys.executable, [sys.executable, *argv])


def receive_int(connection: socket.socket) -> int | None:
    data = b""
    while len(data) < 4:
        chunk = connection.recv(4 - len(data))
        if not chunk:
            return None
        data += chunk
    return int(struct.unpack("!i", data)[0])


def wait_for(connection: socket.socket, child: int) -> int:
    """The child's exit code from the zygote; if the zygote is gone, wait for the child itself."""
    code = receive_int(connection)
    if code is not None:
        return code
    while True:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            return 0
        time.sleep(0.2)


def main() -> None:
    argv = sys.argv[1:]
    path = os.environ.get(SOCKET_ENV)
    if not path or argv[:1] != ["-m"] or not os.path.exists(path):
        real_python(argv)
    connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        connection.connect(path)
        request = json.dumps({"argv": argv, "env": dict(os.environ), "cwd": os.getcwd()}).encode()
        socket.send_fds(connection, [request], [0, 1, 2])
        child = receive_int(connection)
    except OSError:
        child = None
    if not child:
        connection.close()
        real_python(argv)

    def forward(number: int, frame: object) -> None:
        try:
            os.kill(child, number)
        except ProcessLookupError:
            pass

    for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, forward)
    code = wait_for(connection, child)
    if code < 0:  # ended by a signal: end the same way, as Spark would see the child end
        signal.signal(-code, signal.SIG_DFL)
        os.kill(os.getpid(), -code)
    sys.exit(code)


if __name__ == "__main__":
    main()
