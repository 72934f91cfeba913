"""``neurolake tls``: the lab's CA and certificates, and the stunnel ends of the Pi -> hub link
(infra/tls.py): ``init`` and ``issue`` on the hub, ``serve`` (started by ``neurolake up``) on the hub,
``tunnel`` on each Pi."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path

from core.settings import Settings
from infra.tls import Credentials, TlsError, hub_tunnel_config, init_ca, issue, stunnel_binary, stunnel_config, tls_dir


def _cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    directory = tls_dir(settings)
    ca = init_ca(directory)
    hosts = tuple(dict.fromkeys([*(args.host or []), "localhost", "127.0.0.1", socket.gethostname()]))
    hub = issue(directory, "hub", server=True, hosts=hosts)
    print(
        f"CA {ca}\nhub certificate {hub.certificate} for {', '.join(hosts)}\n"
        f"set broker.tls_port (e.g. NEUROLAKE_BROKER__TLS_PORT=19093) and run `neurolake up`; "
        f"then `neurolake tls issue DEVICE` for each Pi"
    )
    return 0


def _cmd_issue(args: argparse.Namespace, settings: Settings) -> int:
    credentials = issue(tls_dir(settings), args.device, server=False)
    out: Path = args.out or Path(f"{args.device}-tls")
    out.mkdir(parents=True, exist_ok=True)
    for source in (credentials.certificate, credentials.key, credentials.ca):
        shutil.copy2(source, out / source.name)
    os.chmod(out / credentials.key.name, 0o600)
    print(
        f"{out}/: {credentials.certificate.name}, {credentials.key.name}, {credentials.ca.name}; copy the folder "
        f"privately to the Pi as <paths.home>/tls/ and run `neurolake tls tunnel --hub HUB:PORT` there"
    )
    return 0


def _exec_stunnel(config: Path) -> int:
    binary = stunnel_binary()
    os.execv(binary, [binary, str(config)])
    return 0  # not reached


def _cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    if not settings.broker.tls_port:
        raise TlsError("broker.tls_port is 0: the TLS front is off (set it, e.g. 19093)")
    return _exec_stunnel(hub_tunnel_config(settings))


def _cmd_tunnel(args: argparse.Namespace, settings: Settings) -> int:
    """The Pi's end: listen where the broker says it is (the Pi's own loopback), forward over TLS."""
    directory = tls_dir(settings)
    device = args.device or settings.edge.device_id
    credentials = Credentials(directory / f"{device}.pem", directory / f"{device}.key", directory / "ca.pem")
    missing = [str(p) for p in (credentials.certificate, credentials.key, credentials.ca) if not p.exists()]
    if missing:
        raise TlsError(
            f"missing {', '.join(missing)}; on the hub run `neurolake tls issue {device}` and copy "
            f"the folder here as {directory}"
        )
    hub_host = args.hub.rsplit(":", 1)[0]
    listen = args.listen or f"127.0.0.1:{settings.broker.port}"
    config = stunnel_config(
        "kafka-tls", listen, args.hub, credentials, client=True, check_host=None if args.no_check_host else hub_host
    )
    path = settings.paths.run_dir / "stunnel-pi.conf"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(config)
    return _exec_stunnel(path)


def add_tls_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tls = commands.add_parser("tls", help="TLS with client certificates between the Pis and the hub's broker")
    sub = tls.add_subparsers(dest="tls_command", metavar="TLS_COMMAND", required=True)
    init = sub.add_parser("init", help="make the lab CA and the hub's certificate (once, on the hub)")
    init.add_argument("--host", action="append", help="a name or address the Pis use for the hub (repeatable)")
    init.set_defaults(handler=_cmd_init)
    certificate = sub.add_parser("issue", help="a client certificate for one Pi")
    certificate.add_argument("device")
    certificate.add_argument("--out", type=Path, help="folder to copy to the Pi (default DEVICE-tls)")
    certificate.set_defaults(handler=_cmd_issue)
    serve = sub.add_parser("serve", help="the hub's TLS front of the broker (`neurolake up` starts it)")
    serve.set_defaults(handler=_cmd_serve)
    tunnel = sub.add_parser("tunnel", help="on a Pi: forward the broker's address to the hub over TLS")
    tunnel.add_argument("--hub", required=True, help="HUB:TLS_PORT, e.g. hub.lab:19093")
    tunnel.add_argument("--listen", help="local address (default 127.0.0.1:broker.port, the broker's)")
    tunnel.add_argument("--device", help="whose certificate (default edge.device_id)")
    tunnel.add_argument("--no-check-host", action="store_true", help="do not check the hub certificate's name")
    tunnel.set_defaults(handler=_cmd_tunnel)
