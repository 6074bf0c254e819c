"""The SRT stream id parser: the forms a publisher may send, the refusals, and fuzzing."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.srt import MAX_STREAM_ID, StreamId, StreamIdError, parse_stream_id
from lpstream.media import MAX_STREAM_NAME, STREAM_NAME_PATTERN, check_stream_name
from tests.test_layout import IO_MODULES, ROOT, imported_modules

names = st.from_regex(STREAM_NAME_PATTERN, fullmatch=True).filter(
    lambda name: len(name) <= MAX_STREAM_NAME
)
values = st.text(
    st.characters(exclude_characters=",=", exclude_categories=["Cs"]), min_size=1, max_size=30
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (b"#!::r=live/cam,m=publish", StreamId(name="cam", app="live")),
        (b"#!::m=publish,r=live/cam", StreamId(name="cam", app="live")),
        (b"#!::r=cam,m=publish", StreamId(name="cam")),
        (b"#!::r=live/cam", StreamId(name="cam", app="live")),
        (
            b"#!::u=alice,r=live/cam,m=publish,s=tok3n,h=example.com,t=stream",
            StreamId(name="cam", app="live", user="alice", secret="tok3n", host="example.com"),
        ),
        (b"#!::r=live/cam,m=publish,acme_region=eu", StreamId(name="cam", app="live")),
        (b"live/cam", StreamId(name="cam", app="live")),
        (b"cam", StreamId(name="cam")),
        (b"cam-1.hd_x", StreamId(name="cam-1.hd_x")),
    ],
)
def test_the_forms_a_publisher_may_send(raw: bytes, expected: StreamId) -> None:
    assert parse_stream_id(raw) == expected


@pytest.mark.parametrize(
    ("raw", "code", "words"),
    [
        (b"#!::r=live/cam,m=request", 405, "publishers only"),
        (b"#!::r=live/cam,m=bidirectional", 405, "publishers only"),
        (b"#!::r=live/cam,t=file", 415, "t=stream"),
        (b"#!::m=publish", 400, "names no resource"),
        (b"#!::r=live/cam,r=live/other", 400, "given twice"),
        (b"#!::r=live/cam,x=1", 400, "'x' is not supported"),
        (b"#!::r=live/cam,publish", 400, "not key=value"),
        (b"#!::r=live/cam,=x", 400, "not key=value"),
        (b"#!:{r=live/cam}", 400, "key=value form"),
        (b"other/cam", 404, "unknown application 'other'"),
        (b"#!::r=a/live/cam", 404, "unknown application"),
        (b"/cam", 404, "unknown application"),
        (b"live/..", 400, "invalid stream name"),
        (b"live/", 400, "invalid stream name"),
        (b"live/c am", 400, "invalid stream name"),
        (b"", 400, "no stream id"),
        (b"\xff\xfe", 400, "not UTF-8"),
        (b"x" * (MAX_STREAM_ID + 1), 400, "at most 512"),
    ],
)
def test_refusals_say_why_with_the_code_to_answer(raw: bytes, code: int, words: str) -> None:
    with pytest.raises(StreamIdError, match=words) as caught:
        parse_stream_id(raw)
    assert caught.value.code == code


def test_the_secret_is_kept_out_of_the_repr() -> None:
    stream = parse_stream_id(b"#!::r=live/cam,s=hunter2-secret")
    assert stream.secret == "hunter2-secret"
    assert "hunter2" not in repr(stream)


@given(name=names, user=values, secret=values, order=st.permutations(range(4)))
def test_any_valid_name_with_any_key_order_reads_back(
    name: str, user: str, secret: str, order: list[int]
) -> None:
    pairs = [f"r=live/{name}", "m=publish", f"u={user}", f"s={secret}"]
    raw = ("#!::" + ",".join(pairs[i] for i in order)).encode()
    if len(raw) > MAX_STREAM_ID:
        return
    assert parse_stream_id(raw) == StreamId(name=name, app="live", user=user, secret=secret)
    assert parse_stream_id(f"live/{name}".encode()) == StreamId(name=name, app="live")
    assert parse_stream_id(name.encode()) == StreamId(name=name)


@settings(max_examples=500)
@given(raw=st.binary(max_size=MAX_STREAM_ID + 20))
def test_any_bytes_either_name_a_valid_stream_or_are_refused_with_a_reason(raw: bytes) -> None:
    try:
        stream = parse_stream_id(raw)
    except StreamIdError as exc:
        assert str(exc) and exc.code in (400, 404, 405, 415)
    else:
        assert check_stream_name(stream.name) == stream.name
        assert len(raw) <= MAX_STREAM_ID


@given(name=names, cut=st.integers(min_value=0, max_value=200))
def test_every_prefix_of_a_stream_id_is_read_or_refused_never_a_crash(name: str, cut: int) -> None:
    raw = f"#!::u=bob,r=live/{name},m=publish".encode()
    prefix = raw[: min(cut, len(raw))]
    try:
        stream = parse_stream_id(prefix)
    except StreamIdError:
        return
    assert check_stream_name(stream.name) == stream.name


def test_the_sans_io_modules_do_no_io() -> None:
    for module in ("streamid", "tsdemux", "adts", "interleave"):
        used = {n.split(".")[0] for n in imported_modules(ROOT / "ingest" / "srt" / f"{module}.py")}
        assert not used & IO_MODULES, f"{module} imports {used & IO_MODULES}"
