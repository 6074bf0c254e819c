"""Forward URLs: what is accepted, what is refused and why, and what status may show."""

from __future__ import annotations

import pytest

from lpstream.errors import ProtocolError
from lpstream.restream import MAX_URL_LENGTH, parse_forward_url


def refusal(url: str) -> str:
    with pytest.raises(ProtocolError) as info:
        parse_forward_url(url)
    assert info.value.code == 400
    return str(info.value)


def test_rtmp_url_splits_into_app_and_key_with_the_default_port() -> None:
    target = parse_forward_url("rtmp://a.rtmp.youtube.com/live2/abcd-efgh-1234")
    assert (target.scheme, target.host, target.port) == ("rtmp", "a.rtmp.youtube.com", 1935)
    assert (target.app, target.stream_key) == ("live2", "abcd-efgh-1234")
    assert target.tc_url == "rtmp://a.rtmp.youtube.com:1935/live2"
    assert target.container == "flv"
    assert target.redacted == "rtmp://a.rtmp.youtube.com:1935/live2/****"


def test_rtmps_key_keeps_its_query_and_slashes_and_is_masked_whole() -> None:
    url = "rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Ab?s_bl=1&s_sc=99&a=secret"
    target = parse_forward_url(url)
    assert target.port == 443
    assert target.stream_key == "FB-123-0-Ab?s_bl=1&s_sc=99&a=secret"
    assert target.redacted == "rtmps://live-api-s.facebook.com:443/rtmp/****"
    assert parse_forward_url("RTMPS://host/app/a/b").stream_key == "a/b"
    assert parse_forward_url("rtmps://host/app/k").port == 443


def test_srt_url_reads_ffmpeg_style_parameters_and_masks_secrets() -> None:
    url = "srt://[::1]:9000?streamid=#!::r=live/x,m=publish&passphrase=0123456789ab&pbkeylen=32&latency=250000"
    target = parse_forward_url(url)
    assert (target.host, target.port, target.container) == ("::1", 9000, "mpegts")
    assert target.stream_id == "#!::r=live/x,m=publish"
    assert target.passphrase == "0123456789ab"
    assert (target.pbkeylen, target.latency_ms) == (32, 250)
    assert target.redacted == (
        "srt://[::1]:9000?streamid=****&passphrase=****&pbkeylen=32&latency=250000"
    )
    assert parse_forward_url("srt://10.0.0.5:7001").redacted == "srt://10.0.0.5:7001"
    assert parse_forward_url("srt://h:1?streamid=a%20b").stream_id == "a b"


@pytest.mark.parametrize(
    "url",
    [
        "rtmp://host/app/KEY-1234",
        "rtmps://host:8443/app/KEY-1234?token=KEY-1234",
        "srt://host:1?streamid=KEY-1234&passphrase=KEY-1234-long",
    ],
)
def test_secrets_never_show_in_redacted_or_repr(url: str) -> None:
    target = parse_forward_url(url)
    assert "KEY-1234" not in target.redacted
    assert "KEY-1234" not in repr(target)
    assert "KEY-1234" in target.url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("http://host/app/key", "must start with rtmp://, rtmps:// or srt://"),
        ("file:///etc/passwd", "must start with rtmp://"),
        ("rtmpt://host/app/key", "must start with rtmp://"),
        ("host/app/key", "must start with rtmp://"),
        ("rtmp:///app/key", "has no host"),
        ("rtmp://host/app", "needs an application and a stream key"),
        ("rtmp://host/", "needs an application and a stream key"),
        ("rtmp://host:0/app/key", "port '0'"),
        ("rtmp://host:70000/app/key", "port '70000'"),
        ("rtmp://host:x/app/key", "port 'x'"),
        ("rtmp://host:/app/key", "port ''"),
        ("rtmp://user:pw@host/app/key", "credentials"),
        ("rtmp://bad_host/app/key", "not a valid host name"),
        ("rtmp://-host/app/key", "not a valid host name"),
        ("rtmp://[::g]/app/key", "not an IPv6 address"),
        ("rtmp://[::1/app/key", "no closing ']'"),
        ("rtmp://host/app/key with space", "contains ' '"),
        ("rtmp://host/app/key\n", "contains '\\n'"),
        ("rtmp://host/app/k\x00", "contains '\\x00'"),
        ("rtmp://host/app/kéy", "contains 'é'"),
        ("srt://host", "needs a port"),
        ("srt://host:9000/path", "has no path"),
        ("srt://host:9000?mode=listener", "only mode=caller"),
        ("srt://host:9000?pkt_size=1316", "'pkt_size' is not supported"),
        ("srt://host:9000?streamid", "'streamid' is not supported"),
        ("srt://host:9000?latency=1&latency=2", "given twice"),
        ("srt://host:9000?passphrase=short", "10 to 79 characters"),
        ("srt://host:9000?pbkeylen=20", "16, 24 or 32"),
        ("srt://host:9000?latency=-5", "whole number"),
        ("srt://host:9000?streamid=", "1 to 512 bytes"),
    ],
)
def test_bad_urls_are_refused_with_the_reason(url: str, reason: str) -> None:
    assert reason in refusal(url)


def test_length_limit() -> None:
    base = "rtmp://host/app/"
    assert parse_forward_url(base + "k" * (MAX_URL_LENGTH - len(base))).stream_key
    assert "at most 2048" in refusal(base + "k" * (MAX_URL_LENGTH - len(base) + 1))


def test_refusal_does_not_echo_a_long_url() -> None:
    reason = refusal("ftp://" + "x" * 1000)
    assert len(reason) < 120


def test_scrub_masks_each_secret_in_any_text() -> None:
    rtmp = parse_forward_url("rtmps://h/app/KEY%2F99?token=abcd")
    said = "bad stream KEY%2F99?token=abcd (KEY/99, KEY%2F99)"
    assert rtmp.scrub(said) == "bad stream **** (****, ****)"
    srt = parse_forward_url("srt://h:1?streamid=room-42&passphrase=0123456789")
    assert srt.scrub("rejected room-42 with 0123456789") == "rejected **** with ****"
    assert parse_forward_url("rtmp://h/app/k").scrub("k stays: too short to mask") == (
        "k stays: too short to mask"
    )
