"""Discovery: static lists, a webhook over real HTTP, the chain's active set, ORCH_INFO refresh."""

from __future__ import annotations

import contextlib
import datetime
import http
import ipaddress
import logging
import ssl
from collections.abc import Callable
from fractions import Fraction
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lpstream.chainwatch import ChainWatch
from lpstream.config import HostPort
from lpstream.errors import ConfigError, TransportError
from lpstream.gateway.discovery import (
    ChainSource,
    DiscoveredOrchestrator,
    DiscoveryError,
    StaticSource,
    WebhookSource,
    filter_candidates,
    parse_orchestrator_address,
    refresh_infos,
)
from lpstream.orchestrator.address import PinnedAddress
from lpstream.quic import Fingerprint
from lpstream.wire.messages import OrchInfo
from payments.chain.contracts import ProtocolParameters
from payments.chain.devchain import DevChain

ETH = 10**18


async def test_static_source_lists_its_addresses_once_in_order() -> None:
    a, b = HostPort("10.0.0.1", 8936), HostPort("10.0.0.2", 8936)
    assert await StaticSource([a, b, a]).discover() == [
        DiscoveredOrchestrator(a),
        DiscoveredOrchestrator(b),
    ]


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("10.0.0.1:8936", HostPort("10.0.0.1", 8936)),
        ("quic://orch.example:9000", HostPort("orch.example", 9000)),
        (" https://[::1]:8935/ ", HostPort("::1", 8935)),
        (
            "quic://orch.example:9000#sha256=" + "ab" * 32,
            PinnedAddress("orch.example", 9000, Fingerprint(bytes.fromhex("ab" * 32))),
        ),
    ],
)
def test_orchestrator_addresses_are_read_with_or_without_a_scheme(
    text: str, address: HostPort
) -> None:
    assert parse_orchestrator_address(text) == address


@pytest.mark.parametrize(
    "text",
    [
        "",
        "   ",
        "orch.example",
        ":9000",
        "quic://:9000",
        "h:0",
        "h:99999",
        "ftp://h:1",
        "h:1#sha256=00",
        "h:1#" + "ab" * 32,
    ],
)
def test_unusable_orchestrator_addresses_are_refused(text: str) -> None:
    with pytest.raises(ConfigError):
        parse_orchestrator_address(text)


# --- the webhook, against a real HTTP server on loopback ---------------------------------


@attrs.frozen
class Reply:
    status: int = 200
    body: bytes = b""
    content_length: bool = True
    delay: float = 0.0


async def serve_http(
    nursery: trio.Nursery, routes: dict[str, Reply], *, tls: ssl.SSLContext | None = None
) -> str:
    """A tiny HTTP/1.1 server: one canned reply per path, then close. Returns its base URL."""

    async def handle(stream: trio.abc.Stream) -> None:
        # The client may give up first (too big, too slow, certificate refused).
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await answer(stream)

    async def answer(stream: trio.abc.Stream) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            request += chunk
        reply = routes.get(request.split(b" ", 2)[1].decode(), Reply(status=404))
        await trio.sleep(reply.delay)
        head = f"HTTP/1.1 {reply.status} {http.HTTPStatus(reply.status).phrase}\r\n"
        head += "Content-Type: application/json\r\nConnection: close\r\n"
        if reply.content_length:
            head += f"Content-Length: {len(reply.body)}\r\n"
        await stream.send_all(head.encode() + b"\r\n" + reply.body)
        await stream.aclose()

    if tls is None:
        listeners = await nursery.start(partial(trio.serve_tcp, handle, 0, host="127.0.0.1"))
        return f"http://127.0.0.1:{listeners[0].socket.getsockname()[1]}"
    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, handle, 0, tls, host="127.0.0.1")
    )
    return f"https://127.0.0.1:{listeners[0].transport_listener.socket.getsockname()[1]}"


def self_signed(directory: Path) -> tuple[ssl.SSLContext, bytes]:
    """A server context for 127.0.0.1 with a fresh self-signed certificate, and its PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lpstream test")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    pem = certificate.public_bytes(serialization.Encoding.PEM)
    (directory / "cert.pem").write_bytes(pem)
    (directory / "key.pem").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
    return server, pem


GOOD = (
    b'[{"address": "quic://10.0.0.1:8936", "score": 0.9},'
    b' {"address": "10.0.0.2:8936"},'
    b' {"address": "10.0.0.1:8936", "score": 0.1},'
    b' {"address": "https://10.0.0.3:8935", "score": 1}]'
)


async def test_webhook_lists_its_orchestrators(nursery: trio.Nursery) -> None:
    base = await serve_http(nursery, {"/orchs": Reply(body=GOOD), "/none": Reply(body=b"[]")})
    assert await WebhookSource(f"{base}/orchs").discover() == [
        DiscoveredOrchestrator(HostPort("10.0.0.1", 8936), score=0.9),
        DiscoveredOrchestrator(HostPort("10.0.0.2", 8936)),
        DiscoveredOrchestrator(HostPort("10.0.0.3", 8935), score=1.0),
    ]
    assert await WebhookSource(f"{base}/none").discover() == []


async def test_webhook_over_https(nursery: trio.Nursery, tmp_path: Path) -> None:
    server, pem = self_signed(tmp_path)
    base = await serve_http(nursery, {"/orchs": Reply(body=GOOD)}, tls=server)
    trusting = ssl.create_default_context(cadata=pem.decode())
    found = await WebhookSource(f"{base}/orchs", ssl_context=trusting).discover()
    assert [o.address.host for o in found] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    with pytest.raises(DiscoveryError, match="CERTIFICATE_VERIFY_FAILED"):
        await WebhookSource(f"{base}/orchs").discover()  # not signed by a trusted CA


async def test_webhook_skips_bad_entries_with_a_warning(
    nursery: trio.Nursery, caplog: pytest.LogCaptureFixture
) -> None:
    body = (
        b'[{"address": "10.0.0.1:8936"}, {"address": "nowhere"}, 7,'
        b' {"address": "10.0.0.2:1", "score": "high"}, {"score": 1}]'
    )
    base = await serve_http(nursery, {"/": Reply(body=body)})
    with caplog.at_level(logging.WARNING, logger="lpstream.gateway.discovery"):
        found = await WebhookSource(f"{base}/").discover()
    assert found == [DiscoveredOrchestrator(HostPort("10.0.0.1", 8936))]
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 4 and all("skipping entry" in w for w in warnings)


@pytest.mark.parametrize(
    ("reply", "message"),
    [
        (Reply(body=b"[{"), "not JSON"),
        (Reply(body=b'{"address": "10.0.0.1:1"}'), "JSON dict, not a list"),
        (Reply(body=b'[{"address": "nowhere"}, null]'), "no usable entry"),
        (Reply(body=b'[{"address": "h:1", "score": NaN}]'), "not JSON"),
        (Reply(body=b'[{"address": "h:1", "score": 1e999}]'), "not JSON"),
        (Reply(body=b"[" * 100_000), "nested deeper than 32 levels"),
        (Reply(body=b'[{"address": "h:1", "x": "' + b"[" * 100 + b'"}, [[1]]'), "not JSON"),
        (Reply(status=500, body=b"[]"), r"HTTP 500: \[\]"),
        (Reply(status=302), "HTTP 302"),
        (Reply(body=b"[" + b" " * (1 << 20) + b"]"), "more than the 1048576 allowed"),
        (Reply(body=b"[" + b" " * (1 << 20) + b"]", content_length=False), "longer than"),
    ],
)
async def test_webhook_answers_that_cannot_be_used_raise_discovery_error(
    nursery: trio.Nursery, reply: Reply, message: str
) -> None:
    base = await serve_http(nursery, {"/": reply})
    with pytest.raises(DiscoveryError, match=message):
        await WebhookSource(f"{base}/").discover()


async def test_webhook_that_does_not_answer_in_time_raises(nursery: trio.Nursery) -> None:
    base = await serve_http(nursery, {"/": Reply(body=b"[]", delay=5)})
    started = trio.current_time()
    with pytest.raises(DiscoveryError, match=r"no answer within 0\.2 s"):
        await WebhookSource(f"{base}/", timeout=0.2).discover()
    assert trio.current_time() - started < 2


async def test_webhook_that_cannot_be_reached_raises() -> None:
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(DiscoveryError, match="all attempts to connect"):
        await WebhookSource(f"http://127.0.0.1:{port}/").discover()


@pytest.mark.parametrize("url", ["ftp://h/x", "not a url", "http://[::1/"])
def test_webhook_url_must_be_http(url: str) -> None:
    with pytest.raises(ConfigError):
        WebhookSource(url)


# --- the chain ------------------------------------------------------------------------------


async def test_chain_source_lists_the_active_set_with_stakes_and_uris() -> None:
    chain = await trio.to_thread.run_sync(
        lambda: DevChain.start(parameters=ProtocolParameters(round_length=100), accounts=4)
    )
    setups = [  # stake, service URI ("" = none published)
        (2 * ETH, "not an address"),
        (1 * ETH, "quic://127.0.0.1:9001"),
        (3 * ETH, ""),
        (4 * ETH, "https://127.0.0.1:9004/"),
    ]

    def register() -> None:
        for key, (stake, uri) in zip(chain.keys, setups, strict=True):
            client = chain.client(key)
            client.bond(stake)
            client.register(0, 100)
            if uri:
                client.set_service_uri(uri)

    await trio.to_thread.run_sync(register)
    source = ChainSource(ChainWatch(chain.client(), trio.CapacityLimiter(1)))
    assert await source.discover() == []  # registered, but the active set is fixed at round start

    reader = chain.client()
    await trio.to_thread.run_sync(lambda: chain.mine_to_round(reader.current_round() + 1))
    assert await source.discover() == [
        DiscoveredOrchestrator(
            HostPort("127.0.0.1", 9004), stake=4 * ETH, eth_address=chain.keys[3].address
        ),
        DiscoveredOrchestrator(
            HostPort("127.0.0.1", 9001), stake=1 * ETH, eth_address=chain.keys[1].address
        ),
    ]


# --- ORCH_INFO refresh and filtering ---------------------------------------------------------

FAST, SLOW, FAILING = HostPort("10.0.0.1", 1), HostPort("10.0.0.2", 1), HostPort("10.0.0.3", 1)


async def ask(address: HostPort) -> OrchInfo:
    if address == SLOW:
        await trio.sleep(10)
    if address == FAILING:
        raise TransportError("connection refused")
    return OrchInfo(version=str(address))


async def test_refresh_keeps_the_answers_that_come_within_the_deadline(
    caplog: pytest.LogCaptureFixture, autojump_clock: trio.testing.MockClock
) -> None:
    started = trio.current_time()
    with caplog.at_level(logging.INFO, logger="lpstream.gateway.discovery"):
        infos = await refresh_infos([SLOW, FAILING, FAST, FAST], ask, deadline=0.3)
    elapsed = trio.current_time() - started
    assert infos == {FAST: OrchInfo(version=str(FAST))}
    assert 0.3 <= elapsed < 1.0
    log = "\n".join(r.getMessage() for r in caplog.records)
    assert "connection refused" in log and str(SLOW) in log


async def test_refresh_returns_as_soon_as_everyone_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    started = trio.current_time()
    assert list(await refresh_infos([FAST], ask, deadline=5)) == [FAST]
    assert trio.current_time() - started < 1


def info(
    *, capabilities: tuple[str, ...] = ("transcode",), price: int = 1, pixels: int = 1
) -> OrchInfo:
    return OrchInfo(
        version="1", capabilities=capabilities, price_per_unit=price, pixels_per_unit=pixels
    )


def refuse_bad_params(address: HostPort, info: OrchInfo) -> None:
    if address.host == "bad-params":
        raise KeyError("expiration block in the past")


def candidates(
    infos: dict[HostPort, OrchInfo],
    *,
    max_price: Fraction | None = Fraction(1),
    validate: Callable[[HostPort, OrchInfo], None] | None = refuse_bad_params,
) -> list[str]:
    kept = filter_candidates(
        infos,
        capability="transcode",
        max_price=max_price,
        validate_params=validate,
        suspended=lambda key: key == "suspended:1",
    )
    return [address.host for address, _ in kept]


def test_filter_drops_suspended_incapable_expensive_and_bad_params() -> None:
    infos = {
        HostPort("ok", 1): info(price=3, pixels=4),
        HostPort("suspended", 1): info(),
        HostPort("ai-only", 1): info(capabilities=("ai-live",)),
        HostPort("expensive", 1): info(price=3, pixels=2),
        HostPort("at-max", 1): info(price=5, pixels=5),
        HostPort("bad-params", 1): info(),
    }
    assert candidates(infos) == ["ok", "at-max"]
    assert candidates(infos, max_price=None) == ["ok", "expensive", "at-max"]
    assert candidates(infos, validate=None) == ["ok", "at-max", "bad-params"]
