"""The lab CA's bookkeeping: issued and revoked certificates (no broker needed)."""

from __future__ import annotations

from pathlib import Path

import pytest
from cryptography import x509

from infra.tls import REVOKED, TlsError, init_ca, issue, issued_names, revoke, revoked_names


def test_a_revoked_certificate_leaves_the_issued_ones_and_its_name_cannot_be_reissued(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue(tmp_path, "hub", server=True, hosts=("localhost",))
    issued = issue(tmp_path, "pi-1", server=False)
    issue(tmp_path, "pi-2", server=False)
    common_name = x509.load_pem_x509_certificate(issued.certificate.read_bytes()).subject.rfc4514_string()
    assert common_name == "CN=pi-1"
    assert issued_names(tmp_path) == ["pi-1", "pi-2"]

    kept = revoke(tmp_path, "pi-1")

    assert kept == tmp_path / REVOKED / "pi-1.pem" and kept.exists()
    assert (tmp_path / REVOKED / "pi-1.key").stat().st_mode & 0o077 == 0
    assert issued_names(tmp_path) == ["pi-2"]
    assert revoked_names(tmp_path) == ["pi-1"]
    # The broker knows a Pi by its CN: a new pi-1 would let the revoked certificate in again.
    with pytest.raises(TlsError, match="issue it under a new name"):
        issue(tmp_path, "pi-1", server=False)
    issue(tmp_path, "pi-1-2", server=False)


def test_revoking_what_was_never_issued_or_the_hubs_own_is_refused(tmp_path: Path) -> None:
    init_ca(tmp_path)
    issue(tmp_path, "pi-1", server=False)
    with pytest.raises(TlsError, match="no certificate issued to 'pi-9'; issued: pi-1"):
        revoke(tmp_path, "pi-9")
    revoke(tmp_path, "pi-1")
    with pytest.raises(TlsError, match="already revoked"):
        revoke(tmp_path, "pi-1")
    with pytest.raises(TlsError, match="the hub's own"):
        revoke(tmp_path, "hub")
    assert issued_names(tmp_path / "missing") == [] and revoked_names(tmp_path / "missing") == []
