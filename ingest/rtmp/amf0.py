"""AMF0, the value encoding of RTMP commands and metadata.

Decoding works on one whole message at a time (the chunk stream frames messages), so the
decoder needs no incremental state: it walks a ``memoryview`` with an offset. Everything a
peer controls is bounded: strings by the bytes left in the message, containers by
``MAX_DEPTH`` and the whole decode by ``MAX_ELEMENTS``. A malformed value raises
:class:`~lpstream.errors.RemoteProtocolError`; a value this module cannot encode raises
:class:`~lpstream.errors.LocalProtocolError`.

Python mapping:

========================  ==============================================
AMF0                      Python
========================  ==============================================
number                    ``float`` (``int`` is accepted when encoding)
boolean                   ``bool``
string, long string       ``str`` (the short form when it fits)
object                    ``dict[str, AmfValue]``
ECMA array                :class:`EcmaArray` (a ``dict`` subclass)
strict array              ``list[AmfValue]``
null                      ``None``
undefined                 :data:`UNDEFINED`
date                      :class:`AmfDate`
========================  ==============================================
"""

from __future__ import annotations

import enum
import math
import struct
from collections.abc import Iterable
from typing import TypeAlias

import attrs

from lpstream.errors import LocalProtocolError, RemoteProtocolError

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "UNDEFINED",
    "AmfDate",
    "AmfValue",
    "EcmaArray",
    "Undefined",
    "decode",
    "decode_all",
    "encode",
    "encode_all",
]

MAX_DEPTH = 32
"""Deepest nesting of objects and arrays accepted from a peer."""
MAX_ELEMENTS = 65_536
"""Most values (containers and their members) one decode call accepts from a peer."""

NUMBER = 0x00
BOOLEAN = 0x01
STRING = 0x02
OBJECT = 0x03
MOVIECLIP = 0x04
NULL = 0x05
UNDEFINED_MARKER = 0x06
REFERENCE = 0x07
ECMA_ARRAY = 0x08
OBJECT_END = 0x09
STRICT_ARRAY = 0x0A
DATE = 0x0B
LONG_STRING = 0x0C
UNSUPPORTED = 0x0D
XML_DOCUMENT = 0x0F
TYPED_OBJECT = 0x10
AVMPLUS = 0x11

_MARKER_NAMES = {
    MOVIECLIP: "movieclip",
    REFERENCE: "reference",
    UNSUPPORTED: "unsupported",
    0x0E: "recordset",
    XML_DOCUMENT: "XML document",
    TYPED_OBJECT: "typed object",
    AVMPLUS: "AMF3 switch",
}

_DOUBLE = struct.Struct(">d")
_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_DATE = struct.Struct(">dh")


class Undefined(enum.Enum):
    """The type of :data:`UNDEFINED`, AMF0's ``undefined`` (distinct from ``null``)."""

    UNDEFINED = "undefined"

    def __repr__(self) -> str:
        return "UNDEFINED"


UNDEFINED = Undefined.UNDEFINED
"""AMF0 ``undefined``."""


@attrs.frozen(kw_only=True)
class AmfDate:
    """An AMF0 date."""

    milliseconds: float
    """Milliseconds since the Unix epoch, UTC."""
    timezone: int = 0
    """Reserved time-zone offset in minutes; writers should send 0."""


AmfValue: TypeAlias = (
    "float | bool | str | Undefined | AmfDate | dict[str, AmfValue] | list[AmfValue] | None"
)


class EcmaArray(dict[str, AmfValue]):
    """An AMF0 ECMA array: an associative array, as ``onMetaData`` is usually sent."""


# -- encoding ---------------------------------------------------------------------------------


def encode(value: AmfValue) -> bytes:
    """Encodes one value.

    Raises:
        LocalProtocolError: the value (or a member) has no AMF0 form.
    """
    out = bytearray()
    _encode_into(out, value, 0)
    return bytes(out)


def encode_all(values: Iterable[AmfValue]) -> bytes:
    """Encodes values back to back, as a command message carries them."""
    out = bytearray()
    for value in values:
        _encode_into(out, value, 0)
    return bytes(out)


def _encode_into(out: bytearray, value: AmfValue, depth: int) -> None:
    if isinstance(value, dict | list) and depth >= MAX_DEPTH:
        raise LocalProtocolError(f"AMF0 value nests deeper than {MAX_DEPTH}")
    if value is None:
        out.append(NULL)
    elif value is UNDEFINED:
        out.append(UNDEFINED_MARKER)
    elif isinstance(value, bool):
        out += bytes((BOOLEAN, 1 if value else 0))
    elif isinstance(value, int | float):
        out.append(NUMBER)
        out += _DOUBLE.pack(float(value))
    elif isinstance(value, str):
        raw = value.encode("utf-8")
        if len(raw) <= 0xFFFF:
            out.append(STRING)
            out += _U16.pack(len(raw))
        elif len(raw) <= 0xFFFFFFFF:
            out.append(LONG_STRING)
            out += _U32.pack(len(raw))
        else:
            raise LocalProtocolError("string too long for AMF0")
        out += raw
    elif isinstance(value, EcmaArray):
        out.append(ECMA_ARRAY)
        out += _U32.pack(len(value))
        _encode_properties(out, value, depth)
    elif isinstance(value, dict):
        out.append(OBJECT)
        _encode_properties(out, value, depth)
    elif isinstance(value, list):
        out.append(STRICT_ARRAY)
        out += _U32.pack(len(value))
        for item in value:
            _encode_into(out, item, depth + 1)
    elif isinstance(value, AmfDate):
        out.append(DATE)
        out += _DATE.pack(value.milliseconds, value.timezone)
    else:
        raise LocalProtocolError(f"{type(value).__name__} has no AMF0 encoding")


def _encode_properties(out: bytearray, properties: dict[str, AmfValue], depth: int) -> None:
    for key, item in properties.items():
        if not isinstance(key, str):
            raise LocalProtocolError(f"AMF0 property names must be str, not {type(key).__name__}")
        raw = key.encode("utf-8")
        if not raw:
            # An empty name followed by the end marker would end the object early.
            raise LocalProtocolError("AMF0 property names must not be empty")
        if len(raw) > 0xFFFF:
            raise LocalProtocolError("AMF0 property name longer than 65535 bytes")
        out += _U16.pack(len(raw))
        out += raw
        _encode_into(out, item, depth + 1)
    out += b"\x00\x00\x09"


# -- decoding ---------------------------------------------------------------------------------


def decode(data: bytes | bytearray | memoryview) -> AmfValue:
    """Decodes exactly one value that fills ``data``.

    Raises:
        RemoteProtocolError: the bytes are not one well-formed AMF0 value.
    """
    values = decode_all(data)
    if len(values) != 1:
        raise RemoteProtocolError(f"expected one AMF0 value, found {len(values)}")
    return values[0]


def decode_all(data: bytes | bytearray | memoryview) -> list[AmfValue]:
    """Decodes every value in ``data`` (a command or data message body).

    Raises:
        RemoteProtocolError: the bytes are not a sequence of well-formed AMF0 values.
    """
    reader = _Reader(memoryview(data).cast("B"))
    values: list[AmfValue] = []
    while reader.pos < len(reader.view):
        values.append(reader.value(0))
    return values


@attrs.define
class _Reader:
    view: memoryview
    pos: int = 0
    elements: int = 0

    def take(self, n: int, what: str) -> memoryview:
        end = self.pos + n
        if end > len(self.view):
            raise RemoteProtocolError(
                f"truncated AMF0 {what}: needs {n} bytes at offset {self.pos}, "
                f"{len(self.view) - self.pos} left"
            )
        chunk = self.view[self.pos : end]
        self.pos = end
        return chunk

    def text(self, n: int, what: str) -> str:
        try:
            return str(self.take(n, what), "utf-8")
        except UnicodeDecodeError:
            raise RemoteProtocolError(f"AMF0 {what} is not valid UTF-8") from None

    def u16(self, what: str) -> int:
        value: int = _U16.unpack(self.take(2, what))[0]
        return value

    def u32(self, what: str) -> int:
        value: int = _U32.unpack(self.take(4, what))[0]
        return value

    def value(self, depth: int) -> AmfValue:
        self.elements += 1
        if self.elements > MAX_ELEMENTS:
            raise RemoteProtocolError(f"AMF0 data holds more than {MAX_ELEMENTS} values")
        marker = self.take(1, "type marker")[0]
        if marker == NUMBER:
            number: float = _DOUBLE.unpack(self.take(8, "number"))[0]
            return number
        if marker == BOOLEAN:
            return self.take(1, "boolean")[0] != 0
        if marker == STRING:
            return self.text(self.u16("string length"), "string")
        if marker == LONG_STRING:
            return self.text(self.u32("long string length"), "long string")
        if marker == NULL:
            return None
        if marker == UNDEFINED_MARKER:
            return UNDEFINED
        if marker in (OBJECT, ECMA_ARRAY, STRICT_ARRAY):
            if depth >= MAX_DEPTH:
                raise RemoteProtocolError(f"AMF0 data nests deeper than {MAX_DEPTH}")
            if marker == OBJECT:
                obj: dict[str, AmfValue] = {}
                self.properties(obj, depth + 1)
                return obj
            if marker == ECMA_ARRAY:
                self.u32("ECMA array count")  # a hint only; the end marker ends it
                array = EcmaArray()
                self.properties(array, depth + 1)
                return array
            count = self.u32("strict array count")
            if count > len(self.view) - self.pos:
                # Every member takes at least one byte: refuse before looping.
                raise RemoteProtocolError(
                    f"AMF0 strict array claims {count} members in {len(self.view) - self.pos} bytes"
                )
            return [self.value(depth + 1) for _ in range(count)]
        if marker == DATE:
            milliseconds, timezone = _DATE.unpack(self.take(10, "date"))
            if not math.isfinite(milliseconds):
                raise RemoteProtocolError("AMF0 date is not a finite number")
            return AmfDate(milliseconds=milliseconds, timezone=timezone)
        if marker == OBJECT_END:
            raise RemoteProtocolError(f"AMF0 object end marker outside an object at {self.pos - 1}")
        name = _MARKER_NAMES.get(marker)
        if name is not None:
            raise RemoteProtocolError(
                f"AMF0 {name} values (marker {marker:#04x}) are not supported"
            )
        raise RemoteProtocolError(
            f"unknown AMF0 type marker {marker:#04x} at offset {self.pos - 1}"
        )

    def properties(self, into: dict[str, AmfValue], depth: int) -> None:
        while True:
            key = self.text(self.u16("property name length"), "property name")
            if not key and self.pos < len(self.view) and self.view[self.pos] == OBJECT_END:
                self.pos += 1
                return
            into[key] = self.value(depth)
