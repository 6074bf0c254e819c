"""The QUIC driver over real UDP on 127.0.0.1 (aioquic on both ends, trio drivers)."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from lpstream.errors import TransportError
from lpstream.quic import (
    SEND_BUFFER_HIGH_WATER,
    QuicConnectionHandle,
    QuicStream,
    client_configuration,
    make_self_signed_certificate,
    open_quic_connection,
    serve_quic,
    server_configuration,
)

Handler = Callable[[QuicConnectionHandle], Awaitable[None]]

CERT, KEY = make_self_signed_certificate()


@asynccontextmanager
async def quic_server(handler: Handler, **kwargs: Any) -> AsyncIterator[tuple[str, int]]:
    kwargs.setdefault("configuration", server_configuration(CERT, KEY))
    async with trio.open_nursery() as nursery:
        address = await nursery.start(
            functools.partial(serve_quic, "127.0.0.1", 0, handler, **kwargs)
        )
        yield address
        nursery.cancel_scope.cancel()


async def read_all(stream: QuicStream) -> bytes:
    parts = []
    while data := await stream.receive_some():
        parts.append(data)
    return b"".join(parts)


async def echo_streams(connection: QuicConnectionHandle) -> None:
    """Echo every stream the peer opens, as data arrives, until the connection ends."""

    async def echo(stream: QuicStream) -> None:
        async with stream:
            try:
                while data := await stream.receive_some():
                    await stream.send_all(data)
                await stream.send_eof()
            except TransportError:
                pass  # this stream was reset; the others go on

    try:
        async with trio.open_nursery() as nursery:
            while True:
                nursery.start_soon(echo, await connection.accept_stream())
    except TransportError:
        pass


async def echo_through(connection: QuicConnectionHandle, payload: bytes) -> bytes:
    stream = await connection.open_stream()

    async def send() -> None:
        for offset in range(0, len(payload), 100_000):
            await stream.send_all(payload[offset : offset + 100_000])
        await stream.send_eof()

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(send)
        return await read_all(stream)


async def test_echo_of_5_mb_on_one_stream_arrives_intact() -> None:
    payload = os.urandom(5 * 1024 * 1024)
    async with quic_server(echo_streams) as (host, port), open_quic_connection(host, port) as conn:
        with trio.fail_after(20):
            echoed = await echo_through(conn, payload)
        assert hashlib.sha256(echoed).digest() == hashlib.sha256(payload).digest()
        assert conn.statistics().open_streams == 0
        assert conn.statistics().streams_total == 1


async def test_echo_with_the_real_network_datagram_size() -> None:
    payload = os.urandom(300_000)
    async with (
        quic_server(echo_streams, loopback_datagram_size=None) as (host, port),
        open_quic_connection(host, port, loopback_datagram_size=None) as conn,
    ):
        with trio.fail_after(10):
            assert await echo_through(conn, payload) == payload
        assert conn._quic.configuration.max_datagram_size == 1350


async def test_fifty_concurrent_streams_each_get_their_own_bytes_back() -> None:
    results: dict[int, bytes] = {}
    payloads = {i: os.urandom(20_000 + i) for i in range(50)}
    async with quic_server(echo_streams) as (host, port), open_quic_connection(host, port) as conn:

        async def one(i: int) -> None:
            results[i] = await echo_through(conn, payloads[i])

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                for i in payloads:
                    nursery.start_soon(one, i)
        assert results == payloads
        stats = conn.statistics()
        assert stats.open_streams == 0
        assert stats.streams_total == 50
        assert stats.bytes_sent > sum(map(len, payloads.values()))
        assert stats.bytes_received > sum(map(len, payloads.values()))


async def test_server_opens_a_stream_that_the_client_accepts() -> None:
    answers: list[bytes] = []

    async def push_job(connection: QuicConnectionHandle) -> None:
        stream = await connection.open_stream()
        await stream.send_all(b"JOB 1")
        await stream.send_eof()
        answers.append(await read_all(stream))
        await stream.aclose()

    async with quic_server(push_job) as (host, port), open_quic_connection(host, port) as conn:
        with trio.fail_after(5):
            stream = await conn.accept_stream()
            assert stream.stream_id % 4 == 1  # server-initiated bidirectional
            assert await read_all(stream) == b"JOB 1"
            await stream.send_all(b"RESULT 1")
            await stream.send_eof()
            await conn.wait_closed()  # the handler returned: the server closed
    assert answers == [b"RESULT 1"]


async def test_peer_reset_raises_on_receive_and_the_connection_goes_on() -> None:
    server_stats: list[int] = []

    async def reset_first_echo_second(connection: QuicConnectionHandle) -> None:
        first = await connection.accept_stream()
        await first.receive_some()
        first.reset(7)
        second = await connection.accept_stream()
        async with second:
            await second.send_all(await read_all(second))
            await second.send_eof()
        server_stats.append(connection.statistics().open_streams)

    async with (
        quic_server(reset_first_echo_second) as (host, port),
        open_quic_connection(host, port) as conn,
    ):
        with trio.fail_after(5):
            first = await conn.open_stream()
            await first.send_all(b"hello")
            with pytest.raises(TransportError, match=r"reset by peer \(code 7\)"):
                await first.receive_some()
            with pytest.raises(TransportError, match="stopped receiving"):
                for _ in range(100):  # STOP_SENDING may still be on its way
                    await first.send_all(b"more")
                    await trio.sleep(0.01)
            assert conn.statistics().open_streams == 0  # reset both ways: retired
            assert await echo_through(conn, b"still here") == b"still here"
            assert conn.statistics().open_streams == 0
    assert server_stats == [0]


async def test_close_surfaces_on_pending_receives_and_new_streams() -> None:
    async def accept_then_close(connection: QuicConnectionHandle) -> None:
        stream = await connection.accept_stream()
        await stream.receive_some()
        connection.close(error_code=5, reason="going away")

    async with (
        quic_server(accept_then_close) as (host, port),
        open_quic_connection(host, port) as conn,
    ):
        with trio.fail_after(5):
            stream = await conn.open_stream()
            await stream.send_all(b"x")
            with pytest.raises(TransportError, match="going away"):
                await stream.receive_some()
            await conn.wait_closed()
            with pytest.raises(TransportError):
                await conn.open_stream()
            with pytest.raises(TransportError):
                await conn.accept_stream()
            assert conn.statistics().open_streams == 0


async def test_local_close_wakes_pending_receive() -> None:
    async def idle(connection: QuicConnectionHandle) -> None:
        await connection.wait_closed()

    async with quic_server(idle) as (host, port), open_quic_connection(host, port) as conn:
        stream = await conn.open_stream()

        async def close_soon() -> None:
            await trio.testing.wait_all_tasks_blocked()  # receive_some is parked by now
            conn.close()

        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(close_soon)  # runs while receive_some is parked
                with pytest.raises(TransportError, match="closed locally"):
                    await stream.receive_some()


async def test_send_all_blocks_while_the_peer_does_not_read() -> None:
    window = 256 * 1024
    chunk = 64 * 1024
    reading = trio.Event()
    received: list[int] = []

    async def slow_reader(connection: QuicConnectionHandle) -> None:
        stream = await connection.accept_stream()
        await reading.wait()
        received.append(len(await read_all(stream)))
        await stream.send_eof()

    sent = 0
    async with (
        quic_server(
            slow_reader, configuration=server_configuration(CERT, KEY, max_stream_data=window)
        ) as (host, port),
        open_quic_connection(
            host, port, configuration=client_configuration(max_stream_data=window)
        ) as conn,
    ):
        stream = await conn.open_stream()
        with trio.move_on_after(1.0) as blocked:
            while True:
                await stream.send_all(b"\0" * chunk)
                sent += chunk
        assert blocked.cancelled_caught
        # What was accepted is what the peer's window and our send buffer can hold.
        assert window <= sent <= window + SEND_BUFFER_HIGH_WATER + chunk
        unsent = conn._quic.unsent(stream.stream_id, stream._tx_written)
        assert unsent <= SEND_BUFFER_HIGH_WATER + chunk
        reading.set()
        with trio.fail_after(5):
            await stream.send_eof()
            assert await read_all(stream) == b""
    assert received == [stream._tx_written]


async def test_wait_send_all_might_not_block_waits_for_room() -> None:
    reading = trio.Event()

    async def slow_reader(connection: QuicConnectionHandle) -> None:
        stream = await connection.accept_stream()
        await reading.wait()
        await read_all(stream)

    async with (
        quic_server(slow_reader) as (host, port),
        open_quic_connection(host, port) as conn,
    ):
        stream = await conn.open_stream()
        await stream.wait_send_all_might_not_block()  # empty buffer: returns at once
        # Fill until a write has been blocked for 0.5 s and the wait then still blocks: on a
        # busy machine a slow write is not yet a full stream, so fill on until it is (a wait
        # that never blocks fails here, at the 30 s limit).
        with trio.fail_after(30):
            while True:
                with trio.move_on_after(0.5) as blocked:
                    await stream.send_all(b"\0" * 256 * 1024)
                if not blocked.cancelled_caught:
                    continue
                with trio.move_on_after(0.2) as still_full:
                    await stream.wait_send_all_might_not_block()
                if still_full.cancelled_caught:
                    break
        reading.set()
        with trio.fail_after(5):
            await stream.wait_send_all_might_not_block()
            await stream.send_eof()


async def test_idle_connection_closes_after_the_idle_timeout() -> None:
    async def idle(connection: QuicConnectionHandle) -> None:
        await connection.wait_closed()

    configuration = server_configuration(CERT, KEY, idle_timeout=0.5)
    async with (
        quic_server(idle, configuration=configuration) as (host, port),
        open_quic_connection(
            host, port, configuration=client_configuration(idle_timeout=0.5)
        ) as conn,
    ):
        stream = await conn.open_stream()
        start = trio.current_time()
        with trio.fail_after(5):
            with pytest.raises(TransportError, match="Idle timeout"):
                await stream.receive_some()
            await conn.wait_closed()
        assert 0.4 < trio.current_time() - start < 3
        with pytest.raises(TransportError):
            await conn.open_stream()


async def test_nothing_leaks_after_streams_finish_or_reset() -> None:
    server_connections: list[QuicConnectionHandle] = []

    async def handler(connection: QuicConnectionHandle) -> None:
        server_connections.append(connection)
        await echo_streams(connection)

    async with quic_server(handler) as (host, port), open_quic_connection(host, port) as conn:
        with trio.fail_after(10):
            for _ in range(5):
                await echo_through(conn, b"ok")
            for code in range(5):
                stream = await conn.open_stream()
                await stream.send_all(b"abc")
                stream.reset(code)
            half = await conn.open_stream()
            await half.send_all(b"abc")
            await half.aclose()  # not finished: aborted both ways
            assert conn.statistics().open_streams == 0
            assert conn.statistics().streams_total == 11
            # aioquic discards its per-stream state once both ends are done with it.
            for _ in range(500):
                if not (conn._quic._streams or server_connections[0]._quic._streams):
                    break
                await trio.sleep(0.01)
            assert not conn._quic._streams
            assert not server_connections[0]._quic._streams
            assert server_connections[0].statistics().open_streams == 0


async def test_a_failing_handler_is_logged_and_the_server_goes_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls = 0

    async def flaky(connection: QuicConnectionHandle) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RuntimeError("handler bug")
        await echo_streams(connection)

    with caplog.at_level(logging.ERROR, logger="lpstream.quic"):
        async with quic_server(flaky) as (host, port):
            with trio.fail_after(10):
                async with open_quic_connection(host, port) as first:
                    await first.wait_closed()
                    with pytest.raises(TransportError, match="internal error"):
                        await first.open_stream()
                async with open_quic_connection(host, port) as second:
                    assert await echo_through(second, b"ping") == b"ping"
    assert "handler bug" in caplog.text


async def test_dialling_a_port_with_no_server_fails_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    start = trio.current_time()
    with pytest.raises(TransportError, match=f"127.0.0.1:{port}"):
        async with open_quic_connection("127.0.0.1", port, connect_timeout=2.0):
            pass  # pragma: no cover
    assert trio.current_time() - start < 2.5


async def test_a_silent_peer_times_the_handshake_out() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as silent:
        silent.bind(("127.0.0.1", 0))
        port = silent.getsockname()[1]
        start = trio.current_time()
        with pytest.raises(TransportError, match=r"timed out after 0\.3 s"):
            async with open_quic_connection("127.0.0.1", port, connect_timeout=0.3):
                pass  # pragma: no cover
        assert trio.current_time() - start < 1


async def test_alpn_mismatch_fails_the_handshake() -> None:
    async with quic_server(echo_streams) as (host, port):
        with pytest.raises(TransportError, match="handshake"):
            async with open_quic_connection(
                host, port, configuration=client_configuration(alpn="other/1"), connect_timeout=2
            ):
                pass  # pragma: no cover


async def test_verified_connection_with_a_pinned_certificate() -> None:
    configuration = client_configuration(verify=True, cadata=CERT, server_name="localhost")
    async with (
        quic_server(echo_streams) as (host, port),
        open_quic_connection(host, port, configuration=configuration) as conn,
    ):
        assert await echo_through(conn, b"trusted") == b"trusted"
        assert conn.remote_address[:2] == (host, port)


async def test_an_exception_in_the_block_escapes_ungrouped() -> None:
    async with quic_server(echo_streams) as (host, port):
        with pytest.raises(KeyError):
            async with open_quic_connection(host, port):
                raise KeyError("mine")


def test_self_signed_certificate_round_trips() -> None:
    cert, key = make_self_signed_certificate("node.example")
    assert cert.startswith(b"-----BEGIN CERTIFICATE-----")
    assert b"PRIVATE KEY" in key
    configuration = server_configuration(cert, key)
    assert configuration.alpn_protocols == ["lpstream/1"]
    assert not configuration.is_client
    with pytest.raises(ValueError, match="max_datagram_size"):
        client_configuration(max_datagram_size=20000)


async def test_connections_beyond_the_limit_are_not_served() -> None:
    async with quic_server(echo_streams, max_connections=1) as (host, port):
        async with open_quic_connection(host, port) as first:
            with pytest.raises(TransportError, match="timed out"):
                async with open_quic_connection(host, port, connect_timeout=0.3):
                    pass  # pragma: no cover
            assert await echo_through(first, b"one") == b"one"
        with trio.fail_after(5):
            async with open_quic_connection(host, port) as again:  # the slot was freed
                assert await echo_through(again, b"two") == b"two"


async def test_open_stream_waits_for_the_peers_stream_limit() -> None:
    async with quic_server(echo_streams) as (host, port), open_quic_connection(host, port) as conn:
        streams = []
        with trio.fail_after(5):
            for _ in range(128):  # aioquic's MAX_STREAMS
                stream = await conn.open_stream()
                await stream.send_all(b"x")
                streams.append(stream)
        with trio.move_on_after(0.3) as waiting:
            await conn.open_stream()
        assert waiting.cancelled_caught
        for stream in streams:
            await stream.aclose()  # aborts both ways; the peer then grants more streams
        with trio.fail_after(5):
            assert await echo_through(conn, b"after the limit") == b"after the limit"


async def test_a_stream_aborted_before_its_first_byte_is_never_accepted() -> None:
    accepted: list[int] = []

    async def record(connection: QuicConnectionHandle) -> None:
        stream = await connection.accept_stream()
        accepted.append(stream.stream_id)
        async with stream:
            await stream.send_all(await read_all(stream))
            await stream.send_eof()
        await connection.wait_closed()

    async with quic_server(record) as (host, port), open_quic_connection(host, port) as conn:
        with trio.fail_after(5):
            await (await conn.open_stream()).aclose()  # stream 0: RESET_STREAM + STOP_SENDING
            await trio.sleep(0.05)
            assert await echo_through(conn, b"real") == b"real"
    assert accepted == [4]
