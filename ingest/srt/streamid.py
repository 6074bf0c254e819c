"""The SRT stream id a publisher sends, read into the stream it publishes (sans-IO).

How this works: an SRT caller names what it wants in ``SRTO_STREAMID`` (at most 512 bytes,
UTF-8). Two forms are taken:

* SRT's access-control form (the SRT "Access Control Guidelines"): ``#!::`` then
  comma-separated ``key=value`` pairs, ``#!::r=live/{stream},m=publish``. The standard keys
  are ``r`` (the resource: ``live/{stream}`` or ``{stream}``), ``m`` (the mode: ``publish``;
  ``request`` and ``bidirectional`` ask to watch, which this listener does not serve; left
  out, publishing is meant, as the guidelines allow where the listener serves one purpose),
  ``u`` (the user), ``s`` (a session id: here the publisher's key or token), ``h`` (the
  host) and ``t`` (the type: ``stream``). The other one-letter keys are reserved by SRT and
  refused; longer keys (``user_*``, ``company_*``) are the application's and ignored. The
  nested form ``#!:{...}`` is not taken.
* A plain ``live/{stream}`` or ``{stream}``.

The stream name follows :func:`lpstream.media.check_stream_name`. A stream id that breaks a
rule raises :class:`StreamIdError`, whose ``code`` is the status of SRT's access-control
rejection codes less 1000 (400 a bad stream id, 404 an unknown application, 405 a mode other
than publishing, 415 a type other than a stream), which the listener hands back to the caller.
"""

from __future__ import annotations

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.media import check_stream_name

__all__ = ["MAX_STREAM_ID", "StreamId", "StreamIdError", "parse_stream_id"]

MAX_STREAM_ID = 512
"""Longest stream id, in bytes (libsrt's limit on ``SRTO_STREAMID``)."""
APP = "live"
"""The one application publishers name: ``live/{stream}``."""
_PREFIX = "#!::"
_KEYS = frozenset("rmusht")
_PUBLISH = "publish"
_EXAMPLE = "#!::r=live/{stream},m=publish"


class StreamIdError(RemoteProtocolError):
    """The stream id breaks a rule; ``code`` says which kind (see the module comment)."""


@attrs.frozen(kw_only=True)
class StreamId:
    """What a publisher's stream id asks for."""

    name: str
    """The stream to publish (a valid stream name)."""
    app: str = ""
    """``live`` when the resource named it (``live/{stream}``), else empty."""
    user: str | None = None
    """The ``u`` key: who publishes, if given."""
    secret: str | None = attrs.field(default=None, repr=False)
    """The ``s`` key: the publisher's key or token, if given (never log it)."""
    host: str | None = None
    """The ``h`` key: the host the publisher addressed, if given."""


def parse_stream_id(raw: bytes) -> StreamId:
    """Reads a stream id as libsrt hands it over.

    Raises:
        StreamIdError: what is wrong with it, and the code to refuse it with.
    """
    if len(raw) > MAX_STREAM_ID:
        raise StreamIdError(
            f"stream id of {len(raw)} bytes; at most {MAX_STREAM_ID} are allowed", code=400
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise StreamIdError("the stream id is not UTF-8", code=400) from None
    if not text:
        raise StreamIdError(f"no stream id: give one such as streamid={_EXAMPLE}", code=400)
    if text.startswith("#!:"):
        if not text.startswith(_PREFIX):
            raise StreamIdError(
                f"only the key=value form of the stream id is taken ({_EXAMPLE})", code=400
            )
        return _from_keys(text[len(_PREFIX) :])
    return _from_resource(text)


def _from_keys(content: str) -> StreamId:
    values: dict[str, str] = {}
    for pair in content.split(","):
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise StreamIdError(
                f"stream id item {pair[:40]!r} is not key=value ({_EXAMPLE})", code=400
            )
        if key in values:
            raise StreamIdError(f"stream id key {key!r} is given twice", code=400)
        if len(key) == 1 and key not in _KEYS:
            raise StreamIdError(
                f"stream id key {key!r} is not supported (r, m, u, s, h and t are)", code=400
            )
        values[key] = value
    mode = values.get("m", _PUBLISH)
    if mode != _PUBLISH:
        raise StreamIdError(
            f"stream id mode m={mode[:20]!r}: this listener takes publishers only (m=publish)",
            code=405,
        )
    kind = values.get("t", "stream")
    if kind != "stream":
        raise StreamIdError(f"stream id type t={kind[:20]!r}: only t=stream is taken", code=415)
    if "r" not in values:
        raise StreamIdError(f"the stream id names no resource: give r ({_EXAMPLE})", code=400)
    stream = _from_resource(values["r"])
    return attrs.evolve(
        stream,
        user=values.get("u") or None,
        secret=values.get("s") or None,
        host=values.get("h") or None,
    )


def _from_resource(resource: str) -> StreamId:
    app, sep, name = resource.rpartition("/")
    if sep and app != APP:
        raise StreamIdError(
            f"unknown application {app[:40]!r} in the stream id: publish to {APP}/{{stream}}",
            code=404,
        )
    try:
        check_stream_name(name)
    except ValueError as exc:
        raise StreamIdError(str(exc), code=400) from None
    return StreamId(name=name, app=app)
