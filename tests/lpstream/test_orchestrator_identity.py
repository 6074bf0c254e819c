"""The orchestrator's QUIC key and certificate, kept in its data dir."""

from __future__ import annotations

import functools
import hashlib
import os
import subprocess
from pathlib import Path

import pytest
import trio
from cryptography import x509

from lpstream.errors import ConfigError
from lpstream.metrics import Metrics
from lpstream.orchestrator.identity import IDENTITY_FILE, OrchestratorIdentity, load_identity
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import NO_EXPIRY, open_quic_connection


def test_the_identity_is_made_once_private_and_then_reused(tmp_path: Path) -> None:
    folder = tmp_path / "data"
    first = load_identity(folder)
    path = folder / IDENTITY_FILE
    assert first.path == path and path.stat().st_mode & 0o777 == 0o600
    assert folder.stat().st_mode & 0o777 == 0o700
    again = load_identity(folder)
    assert again.fingerprint == first.fingerprint
    assert again.certificate_pem == first.certificate_pem
    assert again.private_key_pem == first.private_key_pem


def test_the_certificate_never_expires_and_openssl_agrees_on_its_fingerprint(
    tmp_path: Path,
) -> None:
    identity = load_identity(tmp_path)
    certificate = x509.load_pem_x509_certificate(identity.certificate_pem)
    assert certificate.not_valid_after_utc == NO_EXPIRY
    der = subprocess.run(
        ["openssl", "x509", "-in", str(tmp_path / IDENTITY_FILE), "-outform", "DER"],
        capture_output=True,
        check=True,
    ).stdout
    assert f"sha256={hashlib.sha256(der).hexdigest()}" == str(identity.fingerprint)


def test_an_identity_file_others_can_read_is_refused(tmp_path: Path) -> None:
    load_identity(tmp_path)
    os.chmod(tmp_path / IDENTITY_FILE, 0o644)
    with pytest.raises(ConfigError, match=r"accessible by group or others.*chmod 600"):
        load_identity(tmp_path)


def test_a_certificate_that_is_not_the_keys_is_refused(tmp_path: Path) -> None:
    one, other = OrchestratorIdentity.generate(), OrchestratorIdentity.generate()
    path = tmp_path / IDENTITY_FILE
    path.write_bytes(one.private_key_pem + other.certificate_pem)
    path.chmod(0o600)
    with pytest.raises(ConfigError, match="not its private key's"):
        load_identity(tmp_path)
    path.write_bytes(b"not pem")
    with pytest.raises(ConfigError, match="not a private key and its certificate"):
        load_identity(tmp_path)


def test_without_a_data_dir_each_run_has_a_new_identity() -> None:
    assert load_identity(None).fingerprint != load_identity(None).fingerprint
    assert load_identity(None).path is None


async def test_a_restarted_orchestrator_serves_the_same_certificate(tmp_path: Path) -> None:
    """Stopped and started again from its data dir, on the same port: old pins still connect."""
    seen = []
    port = 0
    for _ in range(2):
        orchestrator = Orchestrator(secret="s", metrics=Metrics(), identity=load_identity(tmp_path))
        async with trio.open_nursery() as nursery:
            address = await nursery.start(functools.partial(orchestrator.serve, "127.0.0.1", port))
            port = address.port
            async with open_quic_connection("127.0.0.1", port, pin=address.pin) as connection:
                seen.append(connection.peer_fingerprint)
            assert orchestrator.status().service == f"quic://127.0.0.1:{port}#{address.pin}"
            nursery.cancel_scope.cancel()
    assert seen[0] is not None and seen == [seen[0], seen[0]]
