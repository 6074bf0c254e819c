"""Pinned orchestrator addresses: parsing, and real QUIC on loopback against an impostor.

The impostor is a second orchestrator started on the pinned address after the first stopped:
a worker and a client pinned to the first refuse it in the handshake, and the impostor's side
shows that nothing reached it (no connection got past the handshake, no hello, no secret).
"""

from __future__ import annotations

import functools
import logging
import re
import signal
from pathlib import Path

import pytest
import trio

from lpstream.config import HostPort
from lpstream.errors import ConfigError
from lpstream.metrics import Metrics
from lpstream.orchestrator.address import (
    PinnedAddress,
    certificate_pin,
    note_unpinned,
    parse_service_address,
    parse_service_addresses,
    service_url,
)
from lpstream.orchestrator.identity import OrchestratorIdentity, load_identity
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import (
    CertificatePinError,
    Fingerprint,
    QuicConnectionHandle,
    open_quic_connection,
    serve_quic,
)
from lpstream.worker.local import LocalWorker
from lpstream.worker.remote import run_remote_worker
from tests.e2e.nodes import NodeProcess, http_json, wait_for

SECRET = "pinning-test-secret"
HEX = "9f" * 32
PIN = Fingerprint(bytes.fromhex(HEX))


# --- fingerprints and addresses ------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        f"sha256={HEX}",
        f"SHA256={HEX.upper()}",
        f"sha256={':'.join(['9F'] * 32)}",
        f" sha256={HEX} ",
    ],
)
def test_a_pin_is_sha256_and_64_hex_digits_in_either_case(text: str) -> None:
    assert Fingerprint.from_text(text) == PIN
    assert str(PIN) == f"sha256={HEX}"


@pytest.mark.parametrize(
    "text", ["", HEX, f"sha1={HEX}", f"sha256={HEX[:-2]}", f"sha256={HEX}00", "sha256=" + "zz" * 32]
)
def test_anything_else_is_not_a_pin(text: str) -> None:
    with pytest.raises(ConfigError, match="pin"):
        Fingerprint.from_text(text)


def test_the_fingerprint_is_sha256_of_the_certificates_der() -> None:
    identity = OrchestratorIdentity.generate()
    assert identity.fingerprint == Fingerprint.of_pem(identity.certificate_pem)
    assert len(identity.fingerprint.digest) == 32


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"quic://orch.example:9000#sha256={HEX}", PinnedAddress("orch.example", 9000, PIN)),
        (f"10.0.0.1:8936#sha256={HEX.upper()}", PinnedAddress("10.0.0.1", 8936, PIN)),
        (f"quic://[::1]:8936#sha256={HEX}", PinnedAddress("::1", 8936, PIN)),
        ("quic://orch.example:9000", HostPort("orch.example", 9000)),
        ("127.0.0.1:8936", HostPort("127.0.0.1", 8936)),
    ],
)
def test_an_orchestrator_address_may_carry_a_pin(text: str, expected: HostPort) -> None:
    address = parse_service_address(text)
    assert address == expected and type(address) is type(expected)
    assert certificate_pin(address) == (PIN if "#" in text else None)
    assert parse_service_address(str(address)) == address  # what config show writes reads back


def test_orch_addr_takes_pinned_and_plain_addresses_with_the_default_port() -> None:
    assert parse_service_addresses(f"a#sha256={HEX}, b:1", "--orch-addr") == (
        PinnedAddress("a", 8936, PIN),
        HostPort("b", 1),
    )
    assert service_url(PinnedAddress("a", 8936, PIN)) == f"quic://a:8936#sha256={HEX}"


@pytest.mark.parametrize(
    "text", ["h:1#", "h:1#sha256=", "h:1#md5=" + "00" * 16, "h:1#" + HEX, "h:0#sha256=" + HEX]
)
def test_a_bad_pin_or_port_makes_a_bad_address(text: str) -> None:
    with pytest.raises(ConfigError, match="orchestrator address"):
        parse_service_address(text)


def test_unpinned_is_noted_on_loopback_and_a_warning_elsewhere(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = logging.getLogger("test.pinning")
    with caplog.at_level(logging.INFO, logger="test.pinning"):
        note_unpinned(HostPort("127.0.0.1", 8936), log, sends="the secret")
        note_unpinned(HostPort("orch.example", 8936), log, sends="the secret")
        note_unpinned(PinnedAddress("orch.example", 8936, PIN), log, sends="the secret")
    assert [(r.levelname, r.getMessage().split(":")[0]) for r in caplog.records] == [
        ("INFO", "orchestrator 127.0.0.1"),
        ("WARNING", "orchestrator orch.example"),
    ]
    assert "unpinned (allowed on loopback)" in caplog.records[0].getMessage()
    assert "whoever answers at that address gets the secret" in caplog.records[1].getMessage()


# --- real QUIC on loopback -------------------------------------------------------------------


def orchestrator(folder: Path) -> Orchestrator:
    return Orchestrator(secret=SECRET, metrics=Metrics(), identity=load_identity(folder))


async def test_a_worker_refuses_an_impostor_on_the_pinned_address_and_keeps_its_secret(
    nursery: trio.Nursery, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    real = orchestrator(tmp_path / "real")
    async with trio.open_nursery() as first:
        address = await first.start(real.serve, "127.0.0.1", 0)
        assert real.identity is not None and certificate_pin(address) == real.identity.fingerprint
        worker_id = await nursery.start(
            functools.partial(
                run_remote_worker,
                address,
                SECRET,
                LocalWorker(capacity=1),
                retry_delay=0.05,
                max_retry_delay=0.2,
            )
        )
        assert worker_id in real.status().workers  # the matching pin connected
        first.cancel_scope.cancel()

    impostor = orchestrator(tmp_path / "impostor")  # same secret: it would accept the worker
    bound = await nursery.start(impostor.serve, "127.0.0.1", address.port)
    assert bound.port == address.port and bound.pin != address.pin

    def refusals() -> list[str]:
        return [
            r.getMessage()
            for r in caplog.records
            if r.name == "lpstream.worker" and "not the pinned" in r.getMessage()
        ]

    with trio.fail_after(15):
        while len(refusals()) < 3:  # noqa: ASYNC110 (the worker's log)
            await trio.sleep(0.05)
    assert refusals()[0].startswith(
        f"refusing 127.0.0.1:{address.port}: its certificate is {bound.pin}, not the pinned "
        f"{address.pin}; nothing was sent to it; retrying in "
    )
    # The impostor's side: no connection got past the handshake, no hello, no worker.
    status = impostor.status()
    assert status.connections == 0 and status.workers == {}
    assert status.worker_hellos.refused == status.worker_hellos.turned_away == 0
    assert caplog.text.count("registered from") == 1  # with the real one only
    nursery.cancel_scope.cancel()


async def test_a_client_refuses_an_impostor_before_sending_anything(
    nursery: trio.Nursery,
) -> None:
    received: list[bytes] = []
    handshakes: list[QuicConnectionHandle] = []

    async def impostor(connection: QuicConnectionHandle) -> None:
        handshakes.append(connection)
        stream = await connection.accept_stream()
        received.append(bytes(await stream.receive_some()))

    real, fake = OrchestratorIdentity.generate(), OrchestratorIdentity.generate()
    _, port = await nursery.start(
        functools.partial(
            serve_quic, "127.0.0.1", 0, impostor, configuration=fake.server_configuration()
        )
    )
    with pytest.raises(CertificatePinError) as refused:
        async with open_quic_connection("127.0.0.1", port, pin=real.fingerprint) as connection:
            stream = await connection.open_stream()
            await stream.send_all(b"a ticket")  # never reached
    assert refused.value.pinned == real.fingerprint
    assert refused.value.presented == fake.fingerprint
    assert str(real.fingerprint) in str(refused.value)
    assert str(fake.fingerprint) in str(refused.value)
    assert handshakes == [] and received == []

    # The right pin connects, and the connection reports what it saw.
    async with open_quic_connection("127.0.0.1", port, pin=fake.fingerprint) as connection:
        assert connection.peer_fingerprint == fake.fingerprint
        stream = await connection.open_stream()
        await stream.send_all(b"hello")
        await stream.send_eof()
        with trio.fail_after(5):
            while not received:  # noqa: ASYNC110 (the server's handler)
                await trio.sleep(0.01)
    assert received == [b"hello"]


# --- real processes ----------------------------------------------------------------------------


def start_orchestrator(folder: Path, name: str, data_dir: Path, port: int = 0) -> NodeProcess:
    node = NodeProcess(
        [
            "orchestrator",
            "--offchain",
            f"--service-addr=127.0.0.1:{port}",
            "--http-addr=127.0.0.1:0",
            f"--orch-secret={SECRET}",
            "--capacity=0",
            f"--data-dir={data_dir}",
        ],
        name=name,
        log_dir=folder,
    )
    node.wait_ready()
    return node


def pinned_address(node: NodeProcess) -> str:
    for line in node.lines:
        match = re.fullmatch(r"orchestrator pinned address: (quic://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError(f"{node.name} printed no pinned address: {node.lines}")


@pytest.mark.slow
def test_processes_keep_their_pin_across_restarts_and_workers_refuse_an_impostor(
    tmp_path: Path,
) -> None:
    started: list[NodeProcess] = []
    try:
        first = start_orchestrator(tmp_path, "first", tmp_path / "real")
        started.append(first)
        pinned = pinned_address(first)
        port = int(first.hostport("quic").rsplit(":", 1)[1])
        assert first.stop() == 0

        again = start_orchestrator(tmp_path, "again", tmp_path / "real", port)
        started.append(again)
        assert pinned_address(again) == pinned  # the identity was kept in the data dir
        assert http_json(f"{again.url('http')}/api/status")["service"] == pinned
        identity = tmp_path / "real" / "quic-identity.pem"
        assert identity.stat().st_mode & 0o777 == 0o600

        worker = NodeProcess(
            ["worker", f"--orch-addr={pinned}", f"--orch-secret={SECRET}", "--capacity=1"],
            name="worker",
            log_dir=tmp_path,
        )
        started.append(worker)
        worker.wait_ready()  # registered: the matching pin connected
        assert again.stop(signal.SIGINT) == 0

        impostor = start_orchestrator(tmp_path, "impostor", tmp_path / "other", port)
        started.append(impostor)
        assert pinned_address(impostor) != pinned
        wait_for(
            lambda: "not the pinned" in worker.log_path.read_text(), 40, "the worker's refusal"
        )
        status = http_json(f"{impostor.url('http')}/api/status")
        assert status["workers"] == {} and status["connections"] == 0
        assert status["worker_hellos"] == {"refused": 0, "turned_away": 0, "addresses": 0}
        impostor_log = impostor.log_path.read_text()
        assert "registered" not in impostor_log and "secret" not in impostor_log
    finally:
        for node in reversed(started):
            node.stop()
