"""``multipart/form-data`` (RFC 7578) bodies, parsed sans-IO within stated limits.

How this works
--------------
A form body is a preamble, then parts, each opened by a delimiter line ``--BOUNDARY`` and
made of header lines, an empty line and the part's bytes, then ``--BOUNDARY--`` and an
epilogue. :class:`FormParser` is fed the body in pieces of any size (``receive_data``), then
told it ended (``receive_eof``); ``next_event`` hands out each :class:`FormPart` once its
closing delimiter has been read, then :data:`FORM_END` once the closing delimiter is read.
The states, in order::

    PREAMBLE -> DELIMITER -> HEADERS -> CONTENT -> DELIMITER -> ... -> EPILOGUE

* A part's bytes end at ``CRLF--BOUNDARY``; while looking for it the parser keeps back only
  the bytes that could start one, so memory is the part's bytes plus a boundary's length.
* Every size a client controls has a limit (:class:`FormLimits`): the whole body, the number
  of parts, the header bytes of one part, one text field's bytes, one file's bytes (a part
  with a ``filename``). Each is checked as bytes arrive, before they are kept; breaking one
  raises :class:`~lpstream.errors.RemoteProtocolError` 413 naming the limit. A body that
  breaks the format (no boundary, a header that is not ``Name: value``, no
  ``Content-Disposition: form-data; name=...``, a body that ends before its closing
  delimiter) raises 400 saying what is wrong. After an error the parser raises it again.
* Header values are read as UTF-8 (browsers and curl send file names so); names are matched
  without case. ``filename*`` (RFC 5987) is read where ``filename`` is absent. Header folding
  is refused (RFC 7578 section 4.8 disallows it; no client sends it).
"""

from __future__ import annotations

import enum
import urllib.parse
from collections import deque

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "FORM_END",
    "FormEnd",
    "FormLimits",
    "FormParser",
    "FormPart",
    "boundary_of",
    "parse_form",
    "parse_header_params",
]

_CRLF = b"\r\n"
_MAX_BOUNDARY = 70
"""RFC 2046 section 5.1.1: a boundary is 1 to 70 characters."""
_MAX_DELIMITER_LINE = 256
"""Bytes after a delimiter before its line ends (transport padding, RFC 2046)."""


@attrs.frozen(kw_only=True)
class FormLimits:
    """The most a client's form may hold; past one the parse fails with 413."""

    max_total: int = 1024 * 1024
    """Bytes of the whole body, preamble and epilogue included."""
    max_parts: int = 32
    """Parts in the form."""
    max_header_bytes: int = 8 * 1024
    """Bytes of one part's header lines together."""
    max_field_bytes: int = 64 * 1024
    """Bytes of one text field (a part without a ``filename``)."""
    max_file_bytes: int = 1024 * 1024
    """Bytes of one file (a part with a ``filename``)."""


@attrs.frozen(kw_only=True)
class FormPart:
    """One complete part of a form."""

    name: str
    """Its field name (``Content-Disposition``'s ``name``)."""
    data: bytes
    """Its bytes."""
    filename: str | None = None
    """The file name the client gave, or None for a text field."""
    content_type: str = "text/plain"
    """Its ``Content-Type`` (``text/plain`` when absent, RFC 7578 section 4.4)."""

    @property
    def is_file(self) -> bool:
        return self.filename is not None


@attrs.frozen
class FormEnd:
    """The closing delimiter was read: no more parts."""


FORM_END = FormEnd()


class _State(enum.Enum):
    PREAMBLE = "preamble"
    DELIMITER = "delimiter"
    HEADERS = "headers"
    CONTENT = "content"
    EPILOGUE = "epilogue"


def _malformed(reason: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"malformed multipart/form-data body: {reason}", code=400)


def parse_header_params(value: str) -> tuple[str, dict[str, str]]:
    """``type; name=value; name="quoted value"`` as (lower-case type, parameters with
    lower-case names). Quoted values may hold ``;`` and backslash escapes.

    Raises:
        RemoteProtocolError: 400 for an unterminated quoted value.
    """
    head, _, rest = value.partition(";")
    params: dict[str, str] = {}
    i = 0
    while i < len(rest):
        while i < len(rest) and rest[i] in " \t;":
            i += 1
        start = i
        while i < len(rest) and rest[i] not in "=;":
            i += 1
        name = rest[start:i].strip().lower()
        if i >= len(rest) or rest[i] == ";":
            if name:
                params[name] = ""
            continue
        i += 1  # the '='
        while i < len(rest) and rest[i] in " \t":
            i += 1
        if i < len(rest) and rest[i] == '"':
            i += 1
            chars: list[str] = []
            while True:
                if i >= len(rest):
                    raise _malformed(f"unterminated quoted value of {name!r}")
                char = rest[i]
                if char == "\\" and i + 1 < len(rest):
                    chars.append(rest[i + 1])
                    i += 2
                elif char == '"':
                    i += 1
                    break
                else:
                    chars.append(char)
                    i += 1
            item = "".join(chars)
        else:
            start = i
            while i < len(rest) and rest[i] != ";":
                i += 1
            item = rest[start:i].strip()
        if name:
            params[name] = item
    return head.strip().lower(), params


def boundary_of(content_type: str | None) -> bytes:
    """The boundary of a ``multipart/form-data`` Content-Type.

    Raises:
        RemoteProtocolError: 415 for another type; 400 without a valid boundary.
    """
    media_type, params = parse_header_params(content_type or "")
    if media_type != "multipart/form-data":
        raise RemoteProtocolError(
            f"expected multipart/form-data, not {media_type or 'no Content-Type'}", code=415
        )
    boundary = params.get("boundary", "")
    if not 1 <= len(boundary) <= _MAX_BOUNDARY or not boundary.isascii():
        raise _malformed("the Content-Type has no valid boundary (1 to 70 ASCII characters)")
    return boundary.encode("ascii")


@attrs.define
class FormParser:
    """A ``multipart/form-data`` body parser, fed bytes (see the module comment)."""

    boundary: bytes
    """The boundary (:func:`boundary_of`), without the leading dashes."""
    limits: FormLimits = attrs.Factory(FormLimits)
    _state: _State = attrs.field(default=_State.PREAMBLE, init=False)
    _buffer: bytearray = attrs.field(factory=bytearray, init=False)
    _skipped: bool = attrs.field(default=False, init=False)
    _total: int = attrs.field(default=0, init=False)
    _parts: int = attrs.field(default=0, init=False)
    _header: tuple[str, str | None, str] | None = attrs.field(default=None, init=False)
    _content: bytearray = attrs.field(factory=bytearray, init=False)
    _events: deque[FormPart | FormEnd] = attrs.field(factory=deque, init=False)
    _ended: bool = attrs.field(default=False, init=False)
    _error: RemoteProtocolError | None = attrs.field(default=None, init=False)

    def __attrs_post_init__(self) -> None:
        if not 1 <= len(self.boundary) <= _MAX_BOUNDARY:
            raise LocalProtocolError("a boundary is 1 to 70 bytes")

    @property
    def _delimiter(self) -> bytes:
        return b"--" + self.boundary

    def receive_data(self, data: bytes) -> None:
        """Feeds the next bytes of the body.

        Raises:
            RemoteProtocolError: 413 past a limit, 400 malformed (see the module comment).
        """
        self._check_usable()
        if self._ended:
            raise LocalProtocolError("data after receive_eof")
        self._total += len(data)
        if self._total > self.limits.max_total:
            self._fail(
                RemoteProtocolError(
                    f"form body over {self.limits.max_total} bytes (max_total)", code=413
                )
            )
        if self._state is _State.EPILOGUE:
            return  # ignored (RFC 2046), counted in the total above
        self._buffer += data
        try:
            self._advance()
        except RemoteProtocolError as exc:
            self._fail(exc)

    def receive_eof(self) -> None:
        """Says the body ended.

        Raises:
            RemoteProtocolError: 400 when it ended before the closing delimiter.
        """
        self._check_usable()
        self._ended = True
        if self._state is not _State.EPILOGUE:
            self._fail(_malformed("the body ended before the closing delimiter"))

    def next_event(self) -> FormPart | FormEnd | None:
        """The next complete part, :data:`FORM_END` after the last, or None for more data."""
        return self._events.popleft() if self._events else None

    def _check_usable(self) -> None:
        if self._error is not None:
            raise self._error

    def _fail(self, exc: RemoteProtocolError) -> None:
        self._error = exc
        self._buffer.clear()
        self._content.clear()
        raise exc

    def _advance(self) -> None:
        """Moves through the states as far as the buffered bytes allow."""
        while True:
            before = self._state
            if before is _State.PREAMBLE:
                self._read_preamble()
            elif before is _State.DELIMITER:
                self._read_delimiter_line()
            elif before is _State.HEADERS:
                self._read_headers()
            elif before is _State.CONTENT:
                self._read_content()
            if self._state is before or self._state is _State.EPILOGUE:
                return

    def _read_preamble(self) -> None:
        delimiter = self._delimiter
        if not self._skipped:  # the buffer starts at the body's first byte
            if self._buffer.startswith(delimiter):
                del self._buffer[: len(delimiter)]
                self._state = _State.DELIMITER
                return
            if delimiter.startswith(self._buffer):
                return  # may still open with the delimiter
        found = self._buffer.find(_CRLF + delimiter)
        if found >= 0:
            del self._buffer[: found + 2 + len(delimiter)]
            self._state = _State.DELIMITER
            return
        keep = len(delimiter) + 1  # bytes that may begin CRLF + delimiter
        if len(self._buffer) > keep:
            del self._buffer[: len(self._buffer) - keep]
            self._skipped = True

    def _read_delimiter_line(self) -> None:
        buffer = self._buffer
        if buffer[:2] == b"--":
            self._events.append(FORM_END)
            buffer.clear()
            self._state = _State.EPILOGUE
            return
        end = buffer.find(_CRLF)
        if end < 0:
            padding = buffer[:-1] if buffer.endswith(b"\r") else buffer
            if (padding.strip(b" \t") and buffer != b"-") or len(buffer) > _MAX_DELIMITER_LINE:
                raise _malformed("a delimiter is not followed by CRLF or --")
            return
        if buffer[:end].strip(b" \t"):
            raise _malformed("a delimiter is not followed by CRLF or --")
        del buffer[: end + 2]
        self._parts += 1
        if self._parts > self.limits.max_parts:
            raise RemoteProtocolError(
                f"form has over {self.limits.max_parts} parts (max_parts)", code=413
            )
        self._state = _State.HEADERS

    def _read_headers(self) -> None:
        if self._buffer.startswith(_CRLF):
            raise _malformed("a part has no Content-Disposition header")
        end = self._buffer.find(_CRLF + _CRLF)
        limit = self.limits.max_header_bytes
        if end < 0:
            if len(self._buffer) > limit + 3:
                raise RemoteProtocolError(
                    f"a part's headers are over {limit} bytes (max_header_bytes)", code=413
                )
            return
        if end > limit:
            raise RemoteProtocolError(
                f"a part's headers are over {limit} bytes (max_header_bytes)", code=413
            )
        block = bytes(self._buffer[:end])
        del self._buffer[: end + 4]
        self._header = _part_header(block)
        self._content = bytearray()
        self._state = _State.CONTENT

    def _read_content(self) -> None:
        assert self._header is not None
        marker = _CRLF + self._delimiter
        found = self._buffer.find(marker)
        if found < 0:
            # All but the bytes that may begin the marker belong to the part.
            take = len(self._buffer) - (len(marker) - 1)
            if take > 0:
                self._keep(self._buffer[:take])
                del self._buffer[:take]
            return
        self._keep(self._buffer[:found])
        del self._buffer[: found + len(marker)]
        name, filename, content_type = self._header
        self._events.append(
            FormPart(
                name=name, filename=filename, content_type=content_type, data=bytes(self._content)
            )
        )
        self._content = bytearray()
        self._header = None
        self._state = _State.DELIMITER

    def _keep(self, data: bytes | bytearray) -> None:
        assert self._header is not None
        name, filename, _ = self._header
        if filename is None:
            limit, what, which = self.limits.max_field_bytes, "field", "max_field_bytes"
        else:
            limit, what, which = self.limits.max_file_bytes, "file", "max_file_bytes"
        if len(self._content) + len(data) > limit:
            raise RemoteProtocolError(
                f"{what} {name[:64]!r} is over {limit} bytes ({which})", code=413
            )
        self._content += data


def _part_header(block: bytes) -> tuple[str, str | None, str]:
    """(name, filename, content type) of a part's header block."""
    try:
        text = block.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("a part's headers are not UTF-8") from None
    headers: dict[str, str] = {}
    for line in text.split("\r\n"):
        if line[:1] in (" ", "\t"):
            raise _malformed("a folded header line")
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name or any(c in name for c in " \t"):
            raise _malformed(f"a header line is not 'Name: value': {line[:64]!r}")
        headers[name] = value.strip()
    disposition = headers.get("content-disposition")
    if disposition is None:
        raise _malformed("a part has no Content-Disposition header")
    kind, params = parse_header_params(disposition)
    if kind != "form-data" or "name" not in params:
        raise _malformed("a part's Content-Disposition is not form-data with a name")
    filename = params.get("filename")
    if filename is None and "filename*" in params:
        _, _, encoded = params["filename*"].partition("''")
        filename = urllib.parse.unquote(encoded, errors="replace")
    content_type = headers.get("content-type") or "text/plain"
    return params["name"], filename, content_type


def parse_form(content_type: str | None, body: bytes, limits: FormLimits) -> list[FormPart]:
    """Every part of a whole ``multipart/form-data`` body.

    Raises:
        RemoteProtocolError: 415 not a form, 413 past a limit, 400 malformed.
    """
    parser = FormParser(boundary_of(content_type), limits)
    parser.receive_data(body)
    parser.receive_eof()
    parts: list[FormPart] = []
    while (event := parser.next_event()) is not None:
        if isinstance(event, FormPart):
            parts.append(event)
    return parts
