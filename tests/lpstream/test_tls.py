"""HTTPS on the HTTP port (issue 13) and the separate metrics address.

A test certificate authority and a server certificate for 127.0.0.1 and localhost are made
here with ``cryptography``. Two halves: the real ``HttpServer`` in this process with TLS and
small limits (each limit still holds over TLS and over HTTP/2; WebSockets over HTTP/1.1 and
over HTTP/2, RFC 8441), then ``lpstream dev`` with ``--tls-cert``/``--tls-key`` and
``--metrics-addr``, asked by curl: refused without the CA, answered over HTTP/1.1 and HTTP/2
with it.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import ipaddress
import json
import re
import socket
import ssl
import subprocess
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs
import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect
from trio_websocket import open_websocket_url
from wsproto.frame_protocol import FrameProtocol, Opcode

from lpstream.config import HostPort
from lpstream.errors import ConfigError
from lpstream.http.limits import BodyReader, HttpLimits
from lpstream.http.server import HttpServer
from lpstream.http.tls import ServerTls, load_server_tls
from tests.attacks.test_http_attacks import Served
from tests.e2e.nodes import LOOPBACK_PORTS, LPSTREAM, NodeProcess, running_dev

MIB = 1024 * 1024


# --- a test certificate authority -----------------------------------------------------------


@attrs.frozen
class Certificates:
    """PEM files of a test CA and of a server certificate it signed."""

    ca: Path
    """The CA's certificate: what a client trusts."""
    cert: Path
    """The server's certificate (``--tls-cert``)."""
    key: Path
    """The server's private key (``--tls-key``)."""
    spki_sha256: str
    """Base64 of the SHA-256 of the server certificate's public key info (Chromium's
    ``--ignore-certificate-errors-spki-list``)."""


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def make_certificates(folder: Path) -> Certificates:
    """A CA, and a server certificate for 127.0.0.1 and localhost signed by it, in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("lpstream test CA"))
        .issuer_name(_name("lpstream test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    files = Certificates(
        ca=folder / "ca.pem",
        cert=folder / "cert.pem",
        key=folder / "key.pem",
        spki_sha256=base64.b64encode(
            hashlib.sha256(
                key.public_key().public_bytes(
                    serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
                )
            ).digest()
        ).decode(),
    )
    files.ca.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return files


def client_context(certs: Certificates, alpn: str = "http/1.1") -> ssl.SSLContext:
    """A client's TLS context that trusts the test CA and offers ``alpn``."""
    context = ssl.create_default_context(cafile=str(certs.ca))
    context.set_alpn_protocols([alpn])
    return context


def https_get(url: str, certs: Certificates, timeout: float = 5.0) -> tuple[int, bytes]:
    """``GET url`` over HTTPS trusting the test CA: (status, body)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout, context=client_context(certs)) as reply:
            return int(reply.status), reply.read()
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("pki"))


# --- clients: TLS with the ALPN asked, and WebSockets over HTTP/2 ------------------------------


async def open_tls(port: int, certs: Certificates, alpn: str) -> trio.SSLStream[trio.SocketStream]:
    """A TLS connection to 127.0.0.1 that negotiated ``alpn``, handshake done."""
    stream = await trio.open_ssl_over_tcp_stream(
        "127.0.0.1", port, ssl_context=client_context(certs, alpn), https_compatible=True
    )
    await stream.do_handshake()
    assert stream.selected_alpn_protocol() == alpn
    return stream


@attrs.define
class H2Client:
    """An HTTP/2 client connection (h2 over trio's TLS): enough to open one stream and read
    its events."""

    stream: trio.SSLStream[trio.SocketStream]
    connection: h2.connection.H2Connection

    @classmethod
    async def open(cls, port: int, certs: Certificates, *, window: int | None = None) -> H2Client:
        """Connects and exchanges SETTINGS; ``window`` sets the client's initial stream
        flow-control window (0: the server may send no body until told)."""
        connection = h2.connection.H2Connection(h2.config.H2Configuration(client_side=True))
        connection.initiate_connection()
        if window is not None:
            connection.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        client = cls(await open_tls(port, certs, "h2"), connection)
        await client.flush()
        while not any(isinstance(e, h2.events.RemoteSettingsChanged) for e in await client.read()):
            pass
        return client

    async def flush(self) -> None:
        await self.stream.send_all(self.connection.data_to_send())

    async def read(self) -> list[h2.events.Event]:
        """The events of what the server sent next ([] once it closed)."""
        try:
            data = await self.stream.receive_some(65536)
        except trio.BrokenResourceError:
            data = b""
        if not data:
            return [h2.events.ConnectionTerminated()]
        events = self.connection.receive_data(data)
        for event in events:
            if isinstance(event, h2.events.DataReceived):
                self.connection.acknowledge_received_data(
                    event.flow_controlled_length, event.stream_id
                )
        await self.flush()
        return events

    async def request(self, method: str, port: int, path: str, **pseudo: str) -> int:
        """Sends a request's headers (no body); returns its stream id."""
        stream_id = self.connection.get_next_available_stream_id()
        headers = [(":method", method), (":scheme", "https"), (":path", path)]
        headers += [(":authority", f"127.0.0.1:{port}")]
        headers += [(f":{name}", value) for name, value in pseudo.items()]
        if method == "CONNECT":
            headers.append(("sec-websocket-version", "13"))
        self.connection.send_headers(stream_id, headers, end_stream=method == "GET")
        await self.flush()
        return stream_id


@attrs.define
class H2WebSocket:
    """A WebSocket over HTTP/2 (extended CONNECT, RFC 8441): one stream of an h2 connection
    carrying WebSocket frames (wsproto's frame layer)."""

    client: H2Client
    stream_id: int
    frames: FrameProtocol = attrs.Factory(lambda: FrameProtocol(client=True, extensions=[]))
    inbox: list[str] = attrs.Factory(list)

    @classmethod
    async def open(cls, port: int, certs: Certificates, target: str) -> H2WebSocket:
        """Connects and opens the WebSocket at ``target``; the server must accept it (200)."""
        client = await H2Client.open(port, certs)
        remote = client.connection.remote_settings
        assert remote[h2.settings.SettingCodes.ENABLE_CONNECT_PROTOCOL] == 1
        stream_id = await client.request("CONNECT", port, target, protocol="websocket")
        ws = cls(client, stream_id)
        while True:
            for event in await ws.read():
                if isinstance(event, h2.events.ResponseReceived):
                    assert dict(event.headers)[b":status"] == b"200", event.headers
                    return ws

    async def read(self) -> list[h2.events.Event]:
        events = await self.client.read()
        for event in events:
            if isinstance(event, h2.events.ConnectionTerminated | h2.events.StreamReset):
                raise AssertionError(f"the WebSocket ended: {event}")
            if isinstance(event, h2.events.DataReceived):
                self.frames.receive_bytes(event.data)
                self.inbox += [
                    str(frame.payload)
                    for frame in self.frames.received_frames()
                    if frame.opcode is Opcode.TEXT
                ]
        return events

    async def send(self, text: str) -> None:
        self.client.connection.send_data(self.stream_id, bytes(self.frames.send_data(text)))
        await self.client.flush()

    async def receive(self) -> str:
        """The next text message."""
        while not self.inbox:
            await self.read()
        return self.inbox.pop(0)

    async def aclose(self) -> None:
        """Sends a close frame, ends the stream and the connection."""
        self.client.connection.send_data(
            self.stream_id, bytes(self.frames.close(1000)), end_stream=True
        )
        await self.client.flush()
        await self.client.stream.aclose()


# --- in one process: the real server over TLS -----------------------------------------------


def _app() -> Starlette:
    async def ok(request: Request) -> Response:
        return PlainTextResponse(f"ok {request.url.scheme} {request.scope['http_version']}")

    async def big(request: Request) -> Response:
        return Response(b"x" * (32 * MIB))

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                text = await websocket.receive_text()
                await websocket.send_text(f"{websocket.url.scheme}: {text}")
        except WebSocketDisconnect:
            pass

    return Starlette(routes=[Route("/ok", ok), Route("/big", big), WebSocketRoute("/echo", echo)])


@asynccontextmanager
async def serving_tls(limits: HttpLimits, tls: ServerTls) -> AsyncIterator[Served]:
    server = HttpServer(_app(), limits=limits, tls=tls)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(server.serve, HostPort("127.0.0.1", 0))
        yield Served(server, BodyReader.from_limits(limits), bound.port)
        nursery.cancel_scope.cancel()


def server_tls(certs: Certificates) -> ServerTls:
    tls = load_server_tls(str(certs.cert), str(certs.key))
    assert tls is not None
    return tls


async def get_over(alpn: str, port: int, certs: Certificates, path: str = "/ok") -> bytes:
    """``GET path`` over a fresh TLS connection that negotiated ``alpn``: the body."""
    if alpn == "h2":
        client = await H2Client.open(port, certs)
        await client.request("GET", port, path)
        body = b""
        ended = False
        while not ended:
            for event in await client.read():
                if isinstance(event, h2.events.DataReceived):
                    body += event.data
                ended = ended or isinstance(event, h2.events.StreamEnded)
        await client.stream.aclose()
        return body
    stream = await open_tls(port, certs, alpn)
    await stream.send_all(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
    reply = b""
    while data := await stream.receive_some(65536):
        reply += data
    await stream.aclose()
    return reply.partition(b"\r\n\r\n")[2]


async def test_https_offers_http2_and_http11_by_alpn(certs: Certificates) -> None:
    async with serving_tls(HttpLimits(), server_tls(certs)) as served:
        assert served.server.scheme == "https"
        assert await get_over("h2", served.port, certs) == b"ok https 2"
        assert await get_over("http/1.1", served.port, certs) == b"ok https 1.1"


async def test_a_client_that_never_finishes_its_handshake_is_dropped_at_the_header_deadline(
    certs: Certificates,
) -> None:
    async with serving_tls(HttpLimits(keep_alive_timeout=0.5), server_tls(certs)) as served:
        silent = await trio.open_tcp_stream("127.0.0.1", served.port)
        # Half a ClientHello: a record header that promises more than ever comes.
        halfway = await trio.open_tcp_stream("127.0.0.1", served.port)
        await halfway.send_all(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
        await served.wait_for(lambda: served.server.statistics().open_connections == 2, "2")
        started = trio.current_time()
        with trio.fail_after(5):
            for stream in (silent, halfway):
                assert await stream.receive_some(1024) == b""  # closed by the server
        assert trio.current_time() - started < 1.5
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        for stream in (silent, halfway):
            await stream.aclose()
        assert await get_over("h2", served.port, certs) == b"ok https 2"


async def test_past_max_connections_a_tls_client_gets_its_503_over_http11(
    certs: Certificates,
) -> None:
    limits = HttpLimits(max_connections=8, keep_alive_timeout=5)
    async with serving_tls(limits, server_tls(certs)) as served:
        holders = [await trio.open_tcp_stream("127.0.0.1", served.port) for _ in range(8)]
        await served.wait_for(lambda: served.server.statistics().open_connections == 8, "8")
        # A client offering h2 first still gets HTTP/1.1: the refusal offers nothing else.
        context = client_context(certs)
        context.set_alpn_protocols(["h2", "http/1.1"])
        stream = await trio.open_ssl_over_tcp_stream(
            "127.0.0.1", served.port, ssl_context=context, https_compatible=True
        )
        await stream.send_all(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
        reply = b""
        with trio.fail_after(5):
            while data := await stream.receive_some(65536):
                reply += data
        assert stream.selected_alpn_protocol() == "http/1.1"
        assert reply.startswith(b"HTTP/1.1 503 ") and b"max_connections=8" in reply
        assert served.server.statistics().refused_total == 1
        await stream.aclose()
        for holder in holders:
            await holder.aclose()
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")


async def test_over_http11_a_tls_client_that_does_not_read_is_dropped_after_send_timeout(
    certs: Certificates,
) -> None:
    async with serving_tls(HttpLimits(send_timeout=0.5), server_tls(certs)) as served:
        sock = trio.socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        await sock.connect(("127.0.0.1", served.port))
        stream = trio.SSLStream(
            trio.SocketStream(sock), client_context(certs), server_hostname="127.0.0.1"
        )
        await stream.send_all(b"GET /big HTTP/1.1\r\nHost: x\r\n\r\n")  # and never reads
        await served.wait_for(
            lambda: served.server.statistics().send_timeouts_total == 1, "a send timeout"
        )
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        await trio.aclose_forcefully(stream)


async def test_over_http2_a_client_granting_no_window_is_dropped_after_send_timeout(
    certs: Certificates,
) -> None:
    async with serving_tls(HttpLimits(send_timeout=0.5), server_tls(certs)) as served:
        client = await H2Client.open(served.port, certs, window=0)
        await client.request("GET", served.port, "/big")  # its body can never be sent
        started = trio.current_time()
        with trio.fail_after(5):
            while not any(
                isinstance(e, h2.events.ConnectionTerminated) for e in await client.read()
            ):
                pass
        assert trio.current_time() - started >= 0.5
        assert served.server.statistics().send_timeouts_total == 1
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")
        await client.stream.aclose()
        assert await get_over("h2", served.port, certs) == b"ok https 2"


async def test_websockets_work_over_tls_on_http11_and_http2(certs: Certificates) -> None:
    async with serving_tls(HttpLimits(), server_tls(certs)) as served:
        url = f"wss://127.0.0.1:{served.port}/echo"
        async with open_websocket_url(url, ssl_context=client_context(certs)) as ws:
            await ws.send_message("over http/1.1")
            assert await ws.get_message() == "wss: over http/1.1"
        with trio.fail_after(10):
            h2_ws = await H2WebSocket.open(served.port, certs, "/echo")
            for text in ("one", "two"):
                await h2_ws.send(text)
                assert await h2_ws.receive() == f"wss: {text}"
            await h2_ws.aclose()
        await served.wait_for(lambda: served.server.statistics().open_connections == 0, "0")


# --- the certificate and key are checked at start -------------------------------------------


def test_tls_takes_both_files_and_names_what_is_wrong(certs: Certificates, tmp_path: Path) -> None:
    assert load_server_tls(None, None) is None
    with pytest.raises(ConfigError, match="--tls-cert needs --tls-key"):
        load_server_tls(str(certs.cert), None)
    with pytest.raises(ConfigError, match="--tls-key needs --tls-cert"):
        load_server_tls(None, str(certs.key))
    missing = tmp_path / "missing.pem"
    with pytest.raises(
        ConfigError, match=re.escape(f"--tls-cert: cannot read {missing}: No such file")
    ):
        load_server_tls(str(missing), str(certs.key))
    with pytest.raises(
        ConfigError, match=re.escape(f"--tls-key: cannot read {missing}: No such file")
    ):
        load_server_tls(str(certs.cert), str(missing))
    with pytest.raises(ConfigError, match=r"--tls-key: .* holds no PEM private key"):
        load_server_tls(str(certs.cert), str(certs.cert))
    other = make_certificates(tmp_path / "other")
    with pytest.raises(ConfigError, match=r"cannot use .* with .*: KEY_VALUES_MISMATCH"):
        load_server_tls(str(certs.cert), str(other.key))


def test_the_node_refuses_to_start_on_a_missing_certificate_file(
    certs: Certificates, tmp_path: Path
) -> None:
    missing = tmp_path / "missing.pem"
    key = [f"--tls-key={certs.key}"]
    run = subprocess.run(
        [*LPSTREAM, "dev", "--offchain", *LOOPBACK_PORTS, f"--tls-cert={missing}", *key],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1, run
    assert f"--tls-cert: cannot read {missing}: No such file or directory" in run.stderr


# --- lpstream dev over HTTPS, with a metrics address ------------------------------------------


@pytest.fixture(scope="module")
def https_node(
    tmp_path_factory: pytest.TempPathFactory, certs: Certificates
) -> Iterator[NodeProcess]:
    flags = (f"--tls-cert={certs.cert}", f"--tls-key={certs.key}", "--metrics-addr=127.0.0.1:0")
    with running_dev(tmp_path_factory.mktemp("https"), *flags) as node:
        yield node


def curl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["curl", "--silent", "--show-error", "--max-time", "10", *args],
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_curl_is_refused_without_the_ca_and_answered_over_http11_and_http2_with_it(
    https_node: NodeProcess, certs: Certificates
) -> None:
    status = f"{https_node.url('https')}/api/status"
    refused = curl(status)
    assert refused.returncode == 60, refused  # the peer's certificate could not be verified
    assert "certificate" in refused.stderr
    for flag, version in (("--http1.1", "1.1"), ("--http2", "2")):
        answer = curl("--cacert", str(certs.ca), flag, "--write-out", "\n%{http_version}", status)
        assert answer.returncode == 0, answer
        body, _, negotiated = answer.stdout.rpartition("\n")
        assert negotiated == version
        assert json.loads(body)["role"] == "dev"


def test_the_node_prints_its_https_urls(https_node: NodeProcess) -> None:
    lines = "\n".join(https_node.lines)
    for route in ("/whip/{stream}", "/hls/{stream}/index.m3u8", "/watch/{stream}", "/api/status"):
        assert f"{https_node.url('https')}{route}" in lines, lines
    assert not re.search(r"http://\S+/(whip|hls|watch|api)", lines), lines


def test_the_metrics_address_serves_metrics_and_nothing_else(
    https_node: NodeProcess, certs: Certificates
) -> None:
    (line,) = [line for line in https_node.lines if line.startswith("metrics:")]
    scrape = line.split()[1]
    assert scrape.startswith("http://127.0.0.1:") and scrape.endswith("/metrics")
    base = scrape.removesuffix("/metrics")
    with urllib.request.urlopen(scrape, timeout=5) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        assert b"# TYPE lpstream_" in reply.read()
    for path in ("/api/status", "/hls/cam/index.m3u8", "/watch/cam", "/"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(base + path, timeout=5)
        with refused.value:
            assert refused.value.code == 404, path
    # The main port still serves /metrics (over HTTPS).
    status, body = https_get(f"{https_node.url('https')}/metrics", certs)
    assert status == 200 and b"# TYPE lpstream_" in body
