"""The bounded JSON-over-HTTP client (``lpstream.webhook``) against a real server on loopback:
what it sends, what it takes back, and every budget it holds a server to."""

from __future__ import annotations

import contextlib
import ssl
from functools import partial
from pathlib import Path

import pytest
import trio

from lpstream.errors import ConfigError
from lpstream.json_depth import json_nesting
from lpstream.webhook import ERROR_TEXT_BYTES, WebhookClient, WebhookError
from tests.access.hooks import Answer, serve_hook
from tests.lpstream.test_discovery import self_signed


async def test_post_sends_json_and_reads_the_json_answer(nursery: trio.Nursery) -> None:
    hook = await serve_hook(nursery, lambda r: Answer.of_json({"seen": r.json()}))
    answer = await WebhookClient(f"{hook.url}/auth?x=1").post_json({"stream": "a", "n": [1, 2]})
    assert answer == {"seen": {"stream": "a", "n": [1, 2]}}
    (request,) = hook.requests
    assert (request.method, request.path) == ("POST", "/auth?x=1")
    assert request.headers["content-type"] == "application/json"
    assert request.headers["host"] == hook.url.removeprefix("http://")


async def test_get_reads_json_and_an_empty_body_is_none(nursery: trio.Nursery) -> None:
    answers = {"/doc": Answer.of_json([1, {"a": None}]), "/empty": Answer(status=204)}
    hook = await serve_hook(nursery, lambda r: answers[r.path])
    assert await WebhookClient(f"{hook.url}/doc").get_json() == [1, {"a": None}]
    assert await WebhookClient(f"{hook.url}/empty").get_json() is None
    assert [r.method for r in hook.requests] == ["GET", "GET"]


async def test_a_non_2xx_answer_is_an_error_with_its_status_and_first_line(
    nursery: trio.Nursery,
) -> None:
    long = b"no such stream here\nsecond line" + b"x" * 100_000
    hook = await serve_hook(nursery, lambda r: Answer(status=403, body=long))
    with pytest.raises(WebhookError, match=r"HTTP 403: no such stream here$") as caught:
        await WebhookClient(hook.url).post_json({})
    assert caught.value.status == 403 and caught.value.text == "no such stream here"
    assert len(long) > ERROR_TEXT_BYTES  # only the start of it was read


@pytest.mark.parametrize(
    ("answer", "message"),
    [
        (Answer(body=b"x" * 2000, content_length=-1), "answer longer than the 1000 bytes"),
        (Answer(body=b"x" * 2000), "answer of 2000 bytes, more than the 1000"),
        (Answer(body=b"[]", content_length=5000), "answer of 5000 bytes, more than the 1000"),
        (Answer(body=b"[" * 40 + b"]" * 40), "nested deeper than 32 levels"),
        (Answer(body=b"{not json"), "answer is not JSON"),
        (Answer(body=b'{"a": NaN}'), "answer is not JSON"),
    ],
)
async def test_an_answer_over_a_budget_or_not_json_is_an_error(
    nursery: trio.Nursery, answer: Answer, message: str
) -> None:
    hook = await serve_hook(nursery, lambda r: answer)
    with pytest.raises(WebhookError, match=message) as caught:
        await WebhookClient(hook.url, max_bytes=1000).get_json()
    assert caught.value.status is None


async def test_a_slow_hook_is_an_error_within_the_timeout(nursery: trio.Nursery) -> None:
    hook = await serve_hook(nursery, lambda r: Answer(delay=5))
    started = trio.current_time()
    with pytest.raises(WebhookError, match=r"no answer within 0.3 s"):
        await WebhookClient(hook.url, timeout=0.3).post_json({})
    assert trio.current_time() - started < 2


async def test_an_unreachable_hook_is_an_error() -> None:
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there now
    with pytest.raises(WebhookError, match=r"ConnectionRefused|OSError"):
        await WebhookClient(f"http://127.0.0.1:{port}/").get_json()


async def test_https_with_the_trusted_certificate_only(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    server, pem = self_signed(tmp_path)

    async def handle(stream: trio.abc.Stream) -> None:
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = await stream.receive_some(4096)
            if not chunk:
                return
            data += chunk
        body = b'{"ok": 1}'
        await stream.send_all(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n" + body)
        await stream.aclose()

    async def guarded(stream: trio.abc.Stream) -> None:
        # The client may refuse our certificate.
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await handle(stream)

    listeners = await nursery.start(
        partial(trio.serve_ssl_over_tcp, guarded, 0, server, host="127.0.0.1")
    )
    url = f"https://127.0.0.1:{listeners[0].transport_listener.socket.getsockname()[1]}/"
    trusting = ssl.create_default_context(cadata=pem.decode())
    assert await WebhookClient(url, ssl_context=trusting).get_json() == {"ok": 1}
    with pytest.raises(WebhookError, match="CERTIFICATE_VERIFY_FAILED"):
        await WebhookClient(url).get_json()


@pytest.mark.parametrize("url", ["ftp://h/", "http://", "nowhere", "http://h:99999/"])
def test_a_url_that_is_not_http_is_a_configuration_error(url: str) -> None:
    with pytest.raises(ConfigError):
        WebhookClient(url)


def test_nesting_counts_brackets_outside_strings_only() -> None:
    assert json_nesting(b'{"a": [1, {"b": "[[[["}]}') == 3
    assert json_nesting(b'"\\"[["') == 0
    assert json_nesting(b"7") == 0
