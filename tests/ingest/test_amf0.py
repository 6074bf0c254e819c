"""AMF0: known bytes, round trips, limits, and garbage that must only ever be a remote error."""

from __future__ import annotations

import contextlib
import math
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.rtmp import amf0
from ingest.rtmp.amf0 import UNDEFINED, AmfDate, AmfValue, EcmaArray
from lpstream.errors import LocalProtocolError, RemoteProtocolError

KNOWN: list[tuple[AmfValue, str]] = [
    (1.0, "00 3ff0000000000000"),
    (-0.5, "00 bfe0000000000000"),
    (True, "01 01"),
    (False, "01 00"),
    ("", "02 0000"),
    ("abc", "02 0003 616263"),
    ("é", "02 0002 c3a9"),
    (None, "05"),
    (UNDEFINED, "06"),
    ({}, "03 000009"),
    ({"a": 1.0}, "03 0001 61 00 3ff0000000000000 000009"),
    ({"a": {"b": None}}, "03 0001 61 03 0001 62 05 000009 000009"),
    (EcmaArray(), "08 00000000 000009"),
    (EcmaArray(w=2.0), "08 00000001 0001 77 00 4000000000000000 000009"),
    ([], "0a 00000000"),
    ([None, "x"], "0a 00000002 05 02 0001 78"),
    (AmfDate(milliseconds=0.0), "0b 0000000000000000 0000"),
    (AmfDate(milliseconds=1.0, timezone=-60), "0b 3ff0000000000000 ffc4"),
]


@pytest.mark.parametrize(("value", "hex_bytes"), KNOWN)
def test_known_values_encode_to_exact_bytes_and_back(value: AmfValue, hex_bytes: str) -> None:
    raw = bytes.fromhex(hex_bytes)
    assert amf0.encode(value) == raw
    decoded = amf0.decode(raw)
    assert decoded == value
    assert type(decoded) is type(value)


def test_ints_encode_as_numbers() -> None:
    assert amf0.encode(3) == amf0.encode(3.0)
    assert amf0.decode(amf0.encode(3)) == 3.0


def test_long_strings_use_the_long_form() -> None:
    text = "x" * 70_000
    raw = amf0.encode(text)
    assert raw[:5] == b"\x0c" + struct.pack(">I", 70_000)
    assert amf0.decode(raw) == text


def test_long_string_marker_is_read() -> None:
    assert amf0.decode(b"\x0c\x00\x00\x00\x02hi") == "hi"


def test_a_connect_command_as_ffmpeg_sends_it() -> None:
    raw = amf0.encode_all(
        [
            "connect",
            1.0,
            {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://h/live"},
        ]
    )
    assert raw.startswith(
        bytes.fromhex("02 0007") + b"connect" + bytes.fromhex("00 3ff0000000000000 03")
    )
    assert amf0.decode_all(raw) == [
        "connect",
        1.0,
        {"app": "live", "type": "nonprivate", "flashVer": "FMLE/3.0", "tcUrl": "rtmp://h/live"},
    ]


def test_ecma_array_count_is_only_a_hint() -> None:
    # librtmp and others write a count that does not match; the end marker decides.
    raw = bytes.fromhex("08 00000005 0001 61 05 000009")
    assert amf0.decode(raw) == {"a": None}


def test_empty_property_name_that_is_not_the_end_is_a_property() -> None:
    raw = bytes.fromhex("03 0000 05 000009")
    assert amf0.decode(raw) == {"": None}


def test_decode_wants_exactly_one_value() -> None:
    with pytest.raises(RemoteProtocolError, match="expected one AMF0 value, found 2"):
        amf0.decode(b"\x05\x05")
    with pytest.raises(RemoteProtocolError, match="found 0"):
        amf0.decode(b"")


@pytest.mark.parametrize(
    ("hex_bytes", "message"),
    [
        ("00 3ff0", "truncated AMF0 number"),
        ("02 0005 6162", "truncated AMF0 string"),
        ("0c 00000100 61", "truncated AMF0 long string"),
        ("02 0002 c328", "not valid UTF-8"),
        ("03 0001 61 05", "truncated AMF0 property name length"),
        ("03 0001 61", "truncated AMF0 type marker"),
        ("09", "object end marker outside an object"),
        ("0a ffffffff 05", "claims 4294967295 members in 1 bytes"),
        ("07 0001", "reference values"),
        ("04", "movieclip values"),
        ("10 0001 61", "typed object values"),
        ("11 02", "AMF3 switch values"),
        ("0e", "recordset values"),
        ("ff", "unknown AMF0 type marker 0xff"),
        ("0b 7ff8000000000000 0000", "date is not a finite number"),
    ],
)
def test_malformed_input_is_a_remote_error(hex_bytes: str, message: str) -> None:
    with pytest.raises(RemoteProtocolError, match=message):
        amf0.decode_all(bytes.fromhex(hex_bytes))


def test_nesting_is_limited() -> None:
    deep_ok = b"\x0a\x00\x00\x00\x01" * (amf0.MAX_DEPTH - 1) + b"\x03\x00\x00\x09"
    assert amf0.decode(deep_ok) is not None
    too_deep = b"\x0a\x00\x00\x00\x01" * amf0.MAX_DEPTH + b"\x03\x00\x00\x09"
    with pytest.raises(RemoteProtocolError, match="nests deeper than 32"):
        amf0.decode(too_deep)


def test_element_count_is_limited() -> None:
    count = amf0.MAX_ELEMENTS + 1
    raw = b"\x0a" + struct.pack(">I", count) + b"\x05" * count
    with pytest.raises(RemoteProtocolError, match="more than 65536 values"):
        amf0.decode(raw)


def test_encoding_refuses_what_amf0_cannot_carry() -> None:
    with pytest.raises(LocalProtocolError, match="set has no AMF0 encoding"):
        amf0.encode({1, 2})  # type: ignore[arg-type]
    with pytest.raises(LocalProtocolError, match="must not be empty"):
        amf0.encode({"": 1.0})
    with pytest.raises(LocalProtocolError, match="must be str"):
        amf0.encode({1: 1.0})  # type: ignore[dict-item]
    nested: AmfValue = []
    for _ in range(amf0.MAX_DEPTH):
        nested = [nested]
    with pytest.raises(LocalProtocolError, match="nests deeper"):
        amf0.encode(nested)


def test_every_truncation_of_a_command_is_a_remote_error() -> None:
    raw = amf0.encode_all(
        [
            "onMetaData",
            EcmaArray(width=320.0, encoder="Lavf", stereo=True, tags=["a", None, UNDEFINED]),
            AmfDate(milliseconds=5.0),
            {"x": {"y": "z" * 3}},
        ]
    )
    for cut in range(1, len(raw)):
        values: list[AmfValue] | None = None
        try:
            values = amf0.decode_all(raw[:cut])
        except RemoteProtocolError:
            continue
        # A cut that falls between two values is a shorter, valid sequence.
        assert amf0.encode_all(values) == raw[:cut]


# -- properties -------------------------------------------------------------------------------

_keys = st.text(min_size=1, max_size=8)
_scalars = (
    st.floats(allow_nan=False)
    | st.booleans()
    | st.text(max_size=20)
    | st.none()
    | st.just(UNDEFINED)
    | st.builds(
        AmfDate,
        milliseconds=st.floats(allow_nan=False, allow_infinity=False),
        timezone=st.integers(-32768, 32767),
    )
)
amf_values = st.recursive(
    _scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(_keys, children, max_size=4)
        | st.dictionaries(_keys, children, max_size=4).map(EcmaArray)
    ),
    max_leaves=20,
)


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b and math.copysign(1, a) == math.copysign(1, b)
    if isinstance(a, dict) and isinstance(b, dict):
        return type(a) is type(b) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


@settings(deadline=None)
@given(st.lists(amf_values, max_size=4))
def test_any_values_round_trip(values: list[AmfValue]) -> None:
    assert _same(amf0.decode_all(amf0.encode_all(values)), values)


@settings(deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_decode_or_raise_a_remote_error(data: bytes) -> None:
    with contextlib.suppress(RemoteProtocolError):
        amf0.decode_all(data)


@settings(deadline=None)
@given(amf_values, st.data())
def test_corrupted_values_decode_or_raise_a_remote_error(
    value: AmfValue, data: st.DataObject
) -> None:
    raw = bytearray(amf0.encode(value))
    index = data.draw(st.integers(0, len(raw) - 1))
    raw[index] = data.draw(st.integers(0, 255))
    with contextlib.suppress(RemoteProtocolError):
        amf0.decode_all(raw)
