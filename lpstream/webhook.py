"""JSON over HTTP(S) to a hook the operator runs: one bounded request, one JSON answer.

How this works:

* :class:`WebhookClient` sends one request per call (``GET`` or ``POST`` of a JSON body) on
  a fresh connection (``Connection: close``), HTTP/1.1 with h11 over trio, TLS for https URLs.
  No client library: an abandoned httpx body stream leaves async generators for trio to warn
  about, and h11 lets every size the server controls be bounded here.
* Budgets, all named in the answer's error: the whole exchange (connect, TLS, request,
  answer) within ``timeout`` seconds; an answer body of at most ``max_bytes`` (a larger
  ``Content-Length`` is refused before a byte of the body is read, a body that grows past it
  as soon as it does); JSON nested at most ``max_nesting`` deep (checked before parsing: the
  decoder recurses per level, and py_ecc, imported with web3, raises the recursion limit far
  past what the C stack holds). Headers are bounded by h11 (16 KiB).
* A 2xx answer gives its JSON document (None for an empty body). Any other status raises
  :class:`WebhookError` with the status and the first line of the answer's text (read up to
  ``ERROR_TEXT_BYTES``); so do a timeout, a refused or broken connection, a TLS failure and a
  body that is not JSON. Redirects are not followed; proxy settings are not used.
* The JSON decoder is msgspec's: it refuses NaN, Infinity and numbers out of range.

The gateway's publish and play authorization (:mod:`lpstream.access`) and orchestrator
discovery (``--orch-webhook-url``) speak to their hooks through it.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from typing import Any

import attrs
import h11
import msgspec
import trio

from lpstream.errors import ConfigError, LpstreamError
from lpstream.json_depth import json_nesting

__all__ = [
    "DEFAULT_MAX_BYTES",
    "DEFAULT_MAX_NESTING",
    "ERROR_TEXT_BYTES",
    "WebhookClient",
    "WebhookError",
]

DEFAULT_MAX_BYTES = 1 << 20
"""The largest answer body read by default (1 MiB)."""
DEFAULT_MAX_NESTING = 32
"""Deepest nesting of lists and objects read by default."""
ERROR_TEXT_BYTES = 1024
"""How much of a non-2xx answer is read for its reason."""
_READ_SIZE = 65536


class WebhookError(LpstreamError):
    """A hook could not be asked, or did not say yes: unreachable, too slow, a non-2xx status,
    or an answer that breaks a budget or is not JSON.

    The message names the URL and the details (for the node's log); ``problem`` names
    neither (for a client).

    Attributes:
        problem: what went wrong, without the URL.
        status: the HTTP status of a non-2xx answer; None when there was no answer.
        text: the first line of a non-2xx answer's body ("" if none).
    """

    def __init__(
        self,
        url: str,
        problem: str,
        *,
        status: int | None = None,
        text: str = "",
        detail: str = "",
    ) -> None:
        super().__init__(f"webhook {url}: {detail or problem}")
        self.problem = problem
        self.status = status
        self.text = text


@attrs.frozen(kw_only=True)
class _Target:
    """Where a request goes."""

    tls: bool
    host: str
    port: int
    host_header: str
    path: str

    @classmethod
    def from_url(cls, url: str) -> _Target:
        try:
            parts = urllib.parse.urlsplit(url)
            port = parts.port
        except ValueError as exc:
            raise ConfigError(f"webhook URL {url!r}: {exc}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"webhook URL {url!r}: needs http://host or https://host")
        tls = parts.scheme == "https"
        host = parts.hostname
        port = port if port is not None else (443 if tls else 80)
        name = f"[{host}]" if ":" in host else host
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        return cls(tls=tls, host=host, port=port, host_header=f"{name}:{port}", path=path)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__  # the TLS or socket error under trio's wrapper
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _first_line(body: bytes) -> str:
    text = body.decode("utf-8", errors="replace").strip().splitlines()
    line = text[0] if text else ""
    return "".join(c for c in line if c.isprintable())[:200]


@attrs.define
class WebhookClient:
    """Asks the hook at ``url`` (see the module comment for the budgets).

    Raises:
        ConfigError: ``url`` is not an http:// or https:// URL with a host.
    """

    url: str
    timeout: float = attrs.field(default=2.0, kw_only=True)
    """Seconds for the whole exchange."""
    max_bytes: int = attrs.field(default=DEFAULT_MAX_BYTES, kw_only=True)
    """The largest answer body read."""
    max_nesting: int = attrs.field(default=DEFAULT_MAX_NESTING, kw_only=True)
    """Deepest nesting of lists and objects read."""
    ssl_context: ssl.SSLContext | None = attrs.field(default=None, kw_only=True)
    """For https URLs; None: the system's trusted CAs (``ssl.create_default_context()``)."""
    _target: _Target = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._target = _Target.from_url(self.url)

    async def get_json(self) -> Any:
        """``GET`` the URL; its JSON answer (None for an empty 2xx body).

        Raises:
            WebhookError: see the module comment.
        """
        return await self._ask("GET", None)

    async def post_json(self, document: Any) -> Any:
        """``POST`` ``document`` as JSON; the JSON answer (None for an empty 2xx body).

        Raises:
            WebhookError: see the module comment.
        """
        return await self._ask("POST", json.dumps(document).encode())

    async def _ask(self, method: str, body: bytes | None) -> Any:
        with trio.move_on_after(self.timeout):
            try:
                answer = await self._exchange(method, body)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError) as exc:
                problem = f"cannot be reached ({type(exc).__name__})"
                raise WebhookError(self.url, problem, detail=_describe(exc)) from exc
            return self._parse(answer)
        raise WebhookError(self.url, f"no answer within {self.timeout:g} s")

    async def _exchange(self, method: str, body: bytes | None) -> bytes:
        target = self._target
        stream: trio.abc.Stream = await trio.open_tcp_stream(target.host, target.port)
        if target.tls:
            context = self.ssl_context or ssl.create_default_context()
            stream = trio.SSLStream(stream, context, server_hostname=target.host)
        async with stream:
            connection = h11.Connection(h11.CLIENT)
            headers = [
                ("Host", target.host_header),
                ("Accept", "application/json"),
                ("User-Agent", "lpstream"),
                ("Connection", "close"),
            ]
            if body is not None:
                headers.append(("Content-Type", "application/json"))
                headers.append(("Content-Length", str(len(body))))
            out = connection.send(h11.Request(method=method, target=target.path, headers=headers))
            if body:
                out += connection.send(h11.Data(data=body))
            await stream.send_all(out + connection.send(h11.EndOfMessage()))
            status, answer = await self._read_answer(connection, stream)
        if not 200 <= status < 300:
            text = _first_line(answer)
            said = f": {text}" if text else ""
            raise WebhookError(self.url, f"HTTP {status}{said}", status=status, text=text)
        return answer

    async def _read_answer(
        self, connection: h11.Connection, stream: trio.abc.Stream
    ) -> tuple[int, bytes]:
        """The answer's status and body: whole for a 2xx (within ``max_bytes``), its first
        ``ERROR_TEXT_BYTES`` otherwise."""
        status = 0
        limit = self.max_bytes
        answer = bytearray()
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(bytes(await stream.receive_some(_READ_SIZE)))
            elif isinstance(event, h11.Response):
                status = event.status_code
                if 200 <= status < 300:
                    self._check_length(event)
                else:
                    limit = ERROR_TEXT_BYTES
            elif isinstance(event, h11.Data):
                answer += event.data
                if len(answer) > limit:
                    if limit == ERROR_TEXT_BYTES:
                        return status, bytes(answer)  # enough of an error's text
                    raise WebhookError(
                        self.url, f"answer longer than the {self.max_bytes} bytes allowed"
                    )
            elif isinstance(event, h11.EndOfMessage):
                return status, bytes(answer)
            elif isinstance(event, h11.ConnectionClosed):
                raise WebhookError(self.url, "connection closed early")
            # InformationalResponse (1xx): wait for the real one.

    def _check_length(self, response: h11.Response) -> None:
        for name, value in response.headers:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_bytes:
                raise WebhookError(
                    self.url,
                    f"answer of {value.decode()} bytes, more than the {self.max_bytes} allowed",
                )

    def _parse(self, body: bytes) -> Any:
        if not body.strip():
            return None
        if json_nesting(body) > self.max_nesting:
            raise WebhookError(self.url, f"answer nested deeper than {self.max_nesting} levels")
        try:
            return msgspec.json.decode(body)
        except (msgspec.DecodeError, RecursionError) as exc:
            raise WebhookError(self.url, f"answer is not JSON ({exc})") from None
