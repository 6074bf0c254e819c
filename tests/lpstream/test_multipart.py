"""The ``multipart/form-data`` parser: bodies real clients write (urllib3, requests, httpx,
curl), fed whole, one byte at a time and cut anywhere; every limit refused with 413 naming
it; malformed bodies refused with 400 saying what is wrong."""

from __future__ import annotations

import itertools
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.http.multipart import (
    FORM_END,
    FormEnd,
    FormLimits,
    FormParser,
    FormPart,
    boundary_of,
    parse_form,
    parse_header_params,
)

PICTURE = b"\x89PNG\r\n\x1a\n\x00\x01--\r\n--x\xff"
"""File bytes with CRLF, dashes and a near-delimiter in them."""

CURL_TYPE = "multipart/form-data; boundary=------------------------9e933357a5910caa"
CURL_BODY = (
    b"--------------------------9e933357a5910caa\r\n"
    b'Content-Disposition: form-data; name="prompt"\r\n\r\n'
    b'a "quoted" cat; \xc3\xbcn\xc3\xafcode\r\n'
    b"--------------------------9e933357a5910caa\r\n"
    b'Content-Disposition: form-data; name="image"; filename="we%22ird \xc3\xbc.png"\r\n'
    b"Content-Type: image/png\r\n\r\n" + PICTURE + b"\r\n"
    b"--------------------------9e933357a5910caa\r\n"
    b'Content-Disposition: form-data; name="strength"\r\n\r\n0.5\r\n'
    b"--------------------------9e933357a5910caa\r\n"
    b'Content-Disposition: form-data; name="model_id"\r\n\r\n\r\n'
    b"--------------------------9e933357a5910caa--\r\n"
)
"""What curl 7.88.1 sent for ``--form-string 'prompt=a "quoted" cat; ünïcode'
-F 'image=@"we\\"ird ü.png";type=image/png' -F strength=0.5 -F model_id=``, captured from a
loopback socket."""

EXPECTED = [
    FormPart(name="prompt", data='a "quoted" cat; ünïcode'.encode()),
    FormPart(name="image", data=PICTURE, filename="we%22ird ü.png", content_type="image/png"),
    FormPart(name="strength", data=b"0.5"),
    FormPart(name="model_id", data=b""),
]


def fed(content_type: str, pieces: Iterator[bytes] | list[bytes]) -> list[FormPart | FormEnd]:
    """Every event of a body fed in ``pieces``, FORM_END included."""
    parser = FormParser(boundary_of(content_type))
    events: list[FormPart | FormEnd] = []
    for piece in pieces:
        parser.receive_data(piece)
        while (event := parser.next_event()) is not None:
            events.append(event)
    parser.receive_eof()
    while (event := parser.next_event()) is not None:
        events.append(event)
    return events


def one_byte_at_a_time(body: bytes) -> Iterator[bytes]:
    return (body[i : i + 1] for i in range(len(body)))


def test_curls_body_whole_and_one_byte_at_a_time() -> None:
    assert parse_form(CURL_TYPE, CURL_BODY, FormLimits()) == EXPECTED
    assert fed(CURL_TYPE, one_byte_at_a_time(CURL_BODY)) == [*EXPECTED, FORM_END]


def test_a_part_is_handed_out_as_soon_as_its_delimiter_is_read() -> None:
    parser = FormParser(boundary_of(CURL_TYPE))
    first_end = CURL_BODY.index(b"\r\n--", 10) + len(b"\r\n--") + len(parser.boundary)
    parser.receive_data(CURL_BODY[: first_end - 1])
    assert parser.next_event() is None
    parser.receive_data(CURL_BODY[first_end - 1 : first_end])
    assert parser.next_event() == EXPECTED[0]


def fields_and_files() -> list[tuple[str, str | tuple[str, bytes, str]]]:
    return [
        ("prompt", "a cat\r\n--not a delimiter"),
        ("seed", "42"),
        ("image", ("pic.png", PICTURE * 3, "image/png")),
        ("empty", ""),
    ]


def expected_parts() -> list[FormPart]:
    return [
        FormPart(name="prompt", data=b"a cat\r\n--not a delimiter"),
        FormPart(name="seed", data=b"42"),
        FormPart(name="image", data=PICTURE * 3, filename="pic.png", content_type="image/png"),
        FormPart(name="empty", data=b""),
    ]


def test_urllib3s_encoder() -> None:
    urllib3 = pytest.importorskip("urllib3")
    body, content_type = urllib3.encode_multipart_formdata(fields_and_files())
    parts = parse_form(content_type, body, FormLimits())
    # urllib3 names a text field's type only for files; fields default to text/plain.
    assert [(p.name, p.data, p.filename) for p in parts] == [
        (p.name, p.data, p.filename) for p in expected_parts()
    ]
    assert fed(content_type, one_byte_at_a_time(body)) == [*parts, FORM_END]


def test_requests_encoder() -> None:
    requests = pytest.importorskip("requests")
    data = {"prompt": "a cat\r\n--not a delimiter", "seed": "42"}
    files = {"image": ("pic.png", PICTURE * 3, "image/png")}
    prepared = requests.Request("POST", "http://x/", data=data, files=files).prepare()
    parts = parse_form(prepared.headers["Content-Type"], prepared.body, FormLimits())
    assert parts == [p for p in expected_parts() if p.name in ("prompt", "seed", "image")]


def test_httpx_encoder() -> None:
    httpx = pytest.importorskip("httpx2")
    data = {"prompt": "a cat\r\n--not a delimiter", "seed": "42"}
    files = {"image": ("pic.png", PICTURE * 3, "image/png")}
    request = httpx.Request("POST", "http://x/", data=data, files=files)
    body = request.read()
    parts = parse_form(request.headers["content-type"], body, FormLimits())
    assert parts == [p for p in expected_parts() if p.name in ("prompt", "seed", "image")]


class _Capture(BaseHTTPRequestHandler):
    captured: list[tuple[str, bytes]] = []

    def do_POST(self) -> None:
        length = int(self.headers["Content-Length"])
        self.captured.append((self.headers["Content-Type"], self.rfile.read(length)))
        self.send_response(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_curl_today() -> None:
    """curl as installed, through a loopback socket (the sample above is an older capture)."""
    curl = shutil.which("curl")
    if curl is None:
        pytest.skip("curl is not installed")
    server = HTTPServer(("127.0.0.1", 0), _Capture)
    thread = threading.Thread(target=server.handle_request)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/image-to-image"
        command = [curl, "-sS", "-H", "Expect:", "--form-string", 'prompt=a; b="c"']
        command += ["-F", "n=7", "-F", "image=@-;filename=p.png;type=image/png", url]
        subprocess.run(
            command,
            input=PICTURE,
            check=True,
            timeout=20,
        )
    finally:
        thread.join(timeout=20)
        server.server_close()
    content_type, body = _Capture.captured[-1]
    assert fed(content_type, one_byte_at_a_time(body)) == [
        FormPart(name="prompt", data=b'a; b="c"'),
        FormPart(name="n", data=b"7"),
        FormPart(name="image", data=PICTURE, filename="p.png", content_type="image/png"),
        FORM_END,
    ]


@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.binary(max_size=300), min_size=1, max_size=5),
    cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=12),
)
def test_any_body_cut_anywhere_parses_the_same(values: list[bytes], cuts: list[int]) -> None:
    urllib3 = pytest.importorskip("urllib3")
    fields = [(f"f{i}", (f"{i}.bin", v, "application/octet-stream")) for i, v in enumerate(values)]
    body, content_type = urllib3.encode_multipart_formdata(fields)
    points = sorted({0, len(body), *(c % (len(body) + 1) for c in cuts)})
    pieces = [body[a:b] for a, b in itertools.pairwise(points)]
    events = fed(content_type, pieces)
    assert [(e.name, e.data) for e in events if isinstance(e, FormPart)] == [
        (f"f{i}", v) for i, v in enumerate(values)
    ]
    assert events[-1] == FORM_END


def form(*parts: bytes, boundary: bytes = b"XyZ") -> tuple[str, bytes]:
    body = b"".join(b"--" + boundary + b"\r\n" + p + b"\r\n" for p in parts)
    return f"multipart/form-data; boundary={boundary.decode()}", body + b"--" + boundary + b"--"


def field(name: str, value: bytes) -> bytes:
    return f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode() + value


def file(name: str, value: bytes) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"; filename="f.bin"\r\n\r\n'
    return head.encode() + value


def refusal(
    content_type: str, body: bytes, limits: FormLimits | None = None
) -> RemoteProtocolError:
    """The error parsing ``body`` raises, whole and one byte at a time (the same both ways)."""
    with pytest.raises(RemoteProtocolError) as whole:
        parse_form(content_type, body, limits or FormLimits())
    parser = FormParser(boundary_of(content_type), limits or FormLimits())
    with pytest.raises(RemoteProtocolError) as fed_bytes:
        for piece in one_byte_at_a_time(body):
            parser.receive_data(piece)
        parser.receive_eof()
    assert (fed_bytes.value.code, str(fed_bytes.value)) == (whole.value.code, str(whole.value))
    with pytest.raises(RemoteProtocolError):  # broken for good
        parser.receive_data(b"")
    return whole.value


@pytest.mark.parametrize(
    ("limits", "parts", "named"),
    [
        (FormLimits(max_parts=2), [field("a", b"1")] * 3, "max_parts"),
        (FormLimits(max_field_bytes=4), [field("prompt", b"12345")], "max_field_bytes"),
        (FormLimits(max_file_bytes=4), [file("image", b"12345")], "max_file_bytes"),
        (FormLimits(max_header_bytes=40), [field("x" * 40, b"")], "max_header_bytes"),
        (FormLimits(max_total=60), [field("a", b"1" * 30)], "max_total"),
    ],
)
def test_every_limit_is_refused_with_413_naming_it(
    limits: FormLimits, parts: list[bytes], named: str
) -> None:
    content_type, body = form(*parts)
    error = refusal(content_type, body, limits)
    assert error.code == 413 and named in str(error)


def test_values_at_their_limits_are_taken() -> None:
    content_type, body = form(field("prompt", b"1234"), file("image", b"abcd"))
    limits = FormLimits(max_parts=2, max_field_bytes=4, max_file_bytes=4, max_total=len(body))
    assert [p.data for p in parse_form(content_type, body, limits)] == [b"1234", b"abcd"]


def test_a_file_bigger_than_the_field_limit_is_taken() -> None:
    content_type, body = form(file("image", b"x" * 100))
    parts = parse_form(content_type, body, FormLimits(max_field_bytes=10))
    assert parts[0].data == b"x" * 100


@pytest.mark.parametrize(
    ("content_type", "body", "reason"),
    [
        (*form(b'Content-Disposition: form-data; name="a"'), "ended before"),
        (*form(b"Content-Disposition: form-data\r\n\r\nv"), "not form-data with a name"),
        (*form(b"Content-Type: text/plain\r\n\r\nv"), "no Content-Disposition"),
        (*form(b"\r\nv"), "no Content-Disposition"),
        (*form(b'Content-Disposition form-data; name="a"\r\n\r\nv'), "not 'Name: value'"),
        (*form(b'Content-Disposition: form-data;\r\n name="a"\r\n\r\nv'), "folded"),
        (*form(b'Content-Disposition: form-data; name="a\r\n\r\nv'), "unterminated"),
        (*form(b'Content-Disposition: form-data; name="\xff"\r\n\r\nv'), "not UTF-8"),
        ("multipart/form-data; boundary=XyZ", form(field("a", b"1"))[1][:-5], "ended before"),
        ("multipart/form-data; boundary=XyZ", b"", "ended before"),
        ("multipart/form-data; boundary=XyZ", b"--XyZjunk\r\n", "not followed by CRLF"),
    ],
)
def test_malformed_bodies_are_refused_with_400(content_type: str, body: bytes, reason: str) -> None:
    error = refusal(content_type, body)
    assert error.code == 400 and reason in str(error)


@pytest.mark.parametrize(
    ("content_type", "code"),
    [
        (None, 415),
        ("application/json", 415),
        ("multipart/mixed; boundary=x", 415),
        ("multipart/form-data", 400),
        ("multipart/form-data; boundary=", 400),
        ("multipart/form-data; boundary=" + "x" * 71, 400),
    ],
)
def test_a_content_type_without_a_form_boundary(content_type: str | None, code: int) -> None:
    with pytest.raises(RemoteProtocolError) as refused:
        boundary_of(content_type)
    assert refused.value.code == code


def test_an_empty_form_is_well_formed() -> None:
    assert parse_form("multipart/form-data; boundary=XyZ", b"--XyZ--", FormLimits()) == []


def test_preamble_epilogue_padding_and_quoted_boundaries() -> None:
    body = (
        b"preamble, ignored\r\n--a;b  \r\n" + field("x", b"1") + b"\r\n--a;b--\r\nepilogue, ignored"
    )
    assert parse_form('multipart/form-data; boundary="a;b"', body, FormLimits()) == [
        FormPart(name="x", data=b"1")
    ]
    assert boundary_of('Multipart/Form-Data; charset=utf-8; BOUNDARY="q\\"x"') == b'q"x'


def test_a_delimiter_not_at_a_line_start_is_not_one() -> None:
    body = b"x--XyZ\r\n" + field("a", b"1") + b"\r\n--XyZ--"
    assert parse_form("multipart/form-data; boundary=XyZ", body, FormLimits()) == []


def test_filename_star_and_header_params() -> None:
    part = (
        b"Content-Disposition: form-data; name=\"f\"; filename*=UTF-8''%C3%BC.png\r\n"
        b"content-type: image/png\r\n\r\nZ"
    )
    parsed = parse_form(*form(part), FormLimits())
    assert parsed == [FormPart(name="f", data=b"Z", filename="ü.png", content_type="image/png")]
    assert parse_header_params('form-data; name="a\\\\b"; flag; x = y ') == (
        "form-data",
        {"name": "a\\b", "flag": "", "x": "y"},
    )


def test_misuse_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        FormParser(b"")
    parser = FormParser(b"XyZ")
    parser.receive_data(b"--XyZ--")
    parser.receive_eof()
    with pytest.raises(LocalProtocolError):
        parser.receive_data(b"more")
