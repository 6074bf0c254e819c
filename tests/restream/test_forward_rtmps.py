"""Forwards over RTMPS: TLS to lpstream's own RTMP server protocol, with a test authority."""

from __future__ import annotations

import datetime
import functools
import ipaddress
import ssl
from pathlib import Path

import trio
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ingest.rtmp import PublishRequested, RtmpServerConnection
from lpstream.media import CodecConfig, MediaPacket, TrackKind
from lpstream.restream import Forward, ForwardSettings, ForwardState, parse_forward_url
from tests.restream.conftest import Clip
from tests.restream.receivers import wait_status

SETTINGS = ForwardSettings(connect_timeout=3, backoff_initial=0.1, backoff_max=0.2)


def tls_contexts(directory: Path) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A server context for localhost signed by a fresh authority, and a client trusting it."""
    now = datetime.datetime.now(datetime.UTC)
    valid = (now - datetime.timedelta(minutes=5), now + datetime.timedelta(hours=1))

    def certificate(
        subject: str,
        key: ec.EllipticCurvePrivateKey,
        issuer: x509.Name,
        signer: ec.EllipticCurvePrivateKey,
        *,
        ca: bool,
    ) -> x509.Certificate:
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(issuer)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(valid[0])
            .not_valid_after(valid[1])
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        )
        if not ca:
            names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "restream test CA")])
    ca = certificate("restream test CA", ca_key, ca_name, ca_key, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    cert = certificate("localhost", key, ca_name, ca_key, ca=False)
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


class RecordingServer:
    """Accepts every publish and keeps the media events it reads."""

    def __init__(self) -> None:
        self.events: list[object] = []

    async def handle(self, stream: trio.abc.Stream) -> None:
        connection = RtmpServerConnection(app="live")
        async with stream:
            while not connection.closed:
                try:
                    data = await stream.receive_some(65_536)
                except trio.BrokenResourceError:
                    return
                connection.receive_data(data)
                for event in connection.events():
                    if isinstance(event, PublishRequested):
                        connection.accept_publish()
                    self.events.append(event)
                await stream.send_all(connection.data_to_send())


async def test_rtmps_forward_delivers_over_tls(tmp_path: Path, clip: Clip) -> None:
    server_tls, client_tls = tls_contexts(tmp_path)
    server = RecordingServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                trio.serve_ssl_over_tcp, server.handle, 0, server_tls, host="127.0.0.1"
            )
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        url = f"rtmps://localhost:{port}/live/tls-key"
        forward = Forward(
            id="t1",
            target=parse_forward_url(url),
            rendition="source",
            settings=SETTINGS,
            ssl_context=client_tls,
        )
        nursery.start_soon(forward.run)
        with trio.fail_after(10):
            await forward.wait_state(ForwardState.LIVE)
        forward.offer(clip.segments[0])
        forward.offer(clip.segments[1])
        await wait_status(forward, lambda s: s.segments_sent == 2)
        with trio.fail_after(10):
            while sum(isinstance(e, MediaPacket) for e in server.events) < 60:  # noqa: ASYNC110
                await trio.sleep(0.02)
        forward.close()
        nursery.cancel_scope.cancel()
    requested = [e for e in server.events if isinstance(e, PublishRequested)]
    assert [r.stream_name for r in requested] == ["tls-key"]
    assert {e.kind for e in server.events if isinstance(e, CodecConfig)} == {
        TrackKind.VIDEO,
        TrackKind.AUDIO,
    }
    video = [e for e in server.events if isinstance(e, MediaPacket) and e.kind is TrackKind.VIDEO]
    assert video[0].keyframe


async def test_rtmps_refuses_a_server_it_does_not_trust(tmp_path: Path) -> None:
    server_tls, _ = tls_contexts(tmp_path)
    server = RecordingServer()
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            functools.partial(
                trio.serve_ssl_over_tcp, server.handle, 0, server_tls, host="127.0.0.1"
            )
        )
        port = listeners[0].transport_listener.socket.getsockname()[1]
        forward = Forward(
            id="t2",
            target=parse_forward_url(f"rtmps://localhost:{port}/live/tls-key"),
            rendition="source",
            settings=SETTINGS,
        )
        nursery.start_soon(forward.run)
        status = await wait_status(forward, lambda s: s.last_error is not None)
        forward.close()
        nursery.cancel_scope.cancel()
    assert status.state == "retrying"
    assert status.last_error is not None and "CERTIFICATE_VERIFY_FAILED" in status.last_error
    assert not [e for e in server.events if isinstance(e, PublishRequested)]
