"""``neurolake keys`` and ``neurolake tls`` on a hub's files (no services)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from core.settings import child_environ
from tests.conftest import isolated_environ


def _neurolake(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "neurolake.cli", *args],
        env=child_environ(isolated_environ(home)),
        cwd=home,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_revoking_a_pis_key_points_at_its_certificate_and_revoking_that_says_what_the_broker_does(
    tmp_path: Path,
) -> None:
    assert _neurolake(tmp_path, "keys", "add", "pi-3", "--out", str(tmp_path / "pi-3.key.json")).returncode == 0
    key_id = json.loads((tmp_path / "pi-3.key.json").read_text())["key_id"]
    assert _neurolake(tmp_path, "tls", "init").returncode == 0
    assert _neurolake(tmp_path, "tls", "issue", "pi-3", "--out", str(tmp_path / "pi-3-tls")).returncode == 0

    # The broker has no TLS listener here: the certificate admits nothing, and the key still verifies.
    revoked = _neurolake(tmp_path, "tls", "revoke", "pi-3")
    assert revoked.returncode == 0, revoked.stderr
    assert "no TLS listener" in revoked.stdout and f"neurolake keys revoke {key_id}" in revoked.stdout

    key = _neurolake(tmp_path, "keys", "revoke", key_id)
    assert key.returncode == 0, key.stderr
    assert "tls revoke" not in key.stdout  # its certificate is revoked already

    again = _neurolake(tmp_path, "tls", "revoke", "pi-3")
    assert again.returncode != 0 and "already revoked" in again.stderr

    # A key revoked first: the certificate is named as the other half.
    assert _neurolake(tmp_path, "keys", "add", "pi-4", "--out", str(tmp_path / "pi-4.key.json")).returncode == 0
    assert _neurolake(tmp_path, "tls", "issue", "pi-4", "--out", str(tmp_path / "pi-4-tls")).returncode == 0
    pi_4 = _neurolake(tmp_path, "keys", "revoke", json.loads((tmp_path / "pi-4.key.json").read_text())["key_id"])
    assert pi_4.returncode == 0 and "`neurolake tls revoke pi-4`" in pi_4.stdout, pi_4.stdout
