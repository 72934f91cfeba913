"""``neurolake tls``: the lab's CA and certificates (infra/tls.py). ``init`` and ``issue`` run on the
hub; the broker's TLS listener (``broker.tls_port``) then admits each Pi by its certificate and holds
it to its ACLs (infra/kafka.py)."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
from pathlib import Path, PurePosixPath

from core.settings import Settings
from infra.kafka import broker_reachable, ensure_device_acls, remove_device_acls
from infra.tls import init_ca, issue, revoke, tls_dir
from schemas.signing import Keyring


def _cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    directory = tls_dir(settings)
    ca = init_ca(directory)
    hosts = tuple(dict.fromkeys([*(args.host or []), "localhost", "127.0.0.1", socket.gethostname()]))
    hub = issue(directory, "hub", server=True, hosts=hosts)
    print(
        f"CA {ca}\nhub certificate {hub.certificate} for {', '.join(hosts)}\n"
        f"set broker.tls_port (e.g. NEUROLAKE_BROKER__TLS_PORT=19093) and broker.advertised_host (the name "
        f"the Pis use) and run `neurolake up`; then `neurolake tls issue DEVICE` for each Pi"
    )
    return 0


def _cmd_issue(args: argparse.Namespace, settings: Settings) -> int:
    credentials = issue(tls_dir(settings), args.device, server=False)
    out: Path = args.out or Path(f"{args.device}-tls")
    out.mkdir(parents=True, exist_ok=True)
    for source in (credentials.certificate, credentials.key, credentials.ca):
        shutil.copy2(source, out / source.name)
    os.chmod(out / credentials.key.name, 0o600)
    granted = (
        "granted now"
        if broker_reachable(settings) and ensure_device_acls(settings, [args.device])
        else "granted at the next `neurolake up`"
    )
    hub = settings.broker.advertised_host or "HUB"
    # Absolute: the Pi's service runs in its own working directory (infra/pi/neurolake-edge.service).
    on_pi = args.pi_dir
    print(
        f"{out}/: {credentials.certificate.name}, {credentials.key.name}, {credentials.ca.name}; copy the folder "
        f"privately to the Pi as {on_pi}/ and give the Pi these settings:\n"
        f'  [kafka]\n  bootstrap_servers = "{hub}:{settings.broker.tls_port or 19093}"\n'
        f'  security_protocol = "SSL"\n  ssl_ca_location = "{on_pi}/{credentials.ca.name}"\n'
        f'  ssl_certificate_location = "{on_pi}/{credentials.certificate.name}"\n'
        f'  ssl_key_location = "{on_pi}/{credentials.key.name}"\n'
        f"{args.device}'s broker ACLs (write its data topics, read devices.control): {granted}"
    )
    return 0


def _cmd_revoke(args: argparse.Namespace, settings: Settings) -> int:
    kept = revoke(tls_dir(settings), args.device)
    if not (settings.broker.embedded and settings.broker.tls_port):
        taken = "this hub's broker has no TLS listener (broker.tls_port = 0), so no ACL of it to remove"
    elif broker_reachable(settings):
        removed = remove_device_acls(settings, [args.device])
        taken = f"its {removed} broker ACL(s) removed now: the broker refuses it every topic"
    else:
        taken = "its broker ACLs are removed at the next `neurolake up` (the broker is not running)"
    keys = Keyring(settings.security.keyring).keys()
    active = [k.key_id for k in keys if k.device_id == args.device and k.revoked_us is None]
    print(
        f"{args.device}'s certificate revoked (kept as {kept}); {taken}. It still passes the TLS handshake "
        "(Kafka checks no revocation list), so a new certificate for this Pi needs a new name."
    )
    if active:
        commands = "; ".join(f"`neurolake keys revoke {key_id}`" for key_id in active)
        print(f"its signing key(s) still verify; to refuse its records too: {commands}")
    return 0


def add_tls_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    tls = commands.add_parser("tls", help="TLS with client certificates between the Pis and the hub's broker")
    sub = tls.add_subparsers(dest="tls_command", metavar="TLS_COMMAND", required=True)
    init = sub.add_parser("init", help="make the lab CA and the hub's certificate (once, on the hub)")
    init.add_argument("--host", action="append", help="a name or address the Pis use for the hub (repeatable)")
    init.set_defaults(handler=_cmd_init)
    certificate = sub.add_parser("issue", help="a client certificate for one Pi, and its broker ACLs")
    certificate.add_argument("device")
    certificate.add_argument("--out", type=Path, help="folder to copy to the Pi (default DEVICE-tls)")
    certificate.add_argument(
        "--pi-dir",
        type=PurePosixPath,
        default=PurePosixPath("/var/lib/neurolake/tls"),
        help="where the folder goes on the Pi (absolute; default: infra/pi/README.md's place)",
    )
    certificate.set_defaults(handler=_cmd_issue)
    revoked = sub.add_parser("revoke", help="take back a Pi's certificate: the broker refuses it every topic")
    revoked.add_argument("device")
    revoked.set_defaults(handler=_cmd_revoke)
