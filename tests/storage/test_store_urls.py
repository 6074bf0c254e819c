"""Choosing a store by URL, and the HTTP addresses an S3 store gives its objects."""

from __future__ import annotations

from pathlib import Path

import pytest

from lpstream.errors import ConfigError
from lpstream.storage import LocalStore, S3Store, check_bucket_name, open_store


def test_a_file_url_opens_a_directory_store(tmp_path: Path) -> None:
    store = open_store(tmp_path.as_uri())
    assert isinstance(store, LocalStore)
    assert store.root == tmp_path
    assert store.url == tmp_path.as_uri()
    assert open_store(store.url).url == store.url


def test_a_file_url_is_percent_decoded_and_may_name_localhost() -> None:
    store = open_store("file://localhost/srv/my%20recordings")
    assert isinstance(store, LocalStore)
    assert store.root == Path("/srv/my recordings")


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("/srv/recordings", "no scheme: for a directory write file:///absolute/path"),
        ("recordings", "no scheme"),
        ("file:recordings", "relative"),
        ("file://recordings/x", "names host 'recordings'"),
        ("file:///srv/rec?x=1", "no query"),
        ("file:///srv/rec%00x", "NUL"),
    ],
)
def test_file_urls_that_are_refused(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        open_store(url)


@pytest.mark.parametrize("url", ["http://example.com/rec", "gs://bucket/x", "ftp://h/x"])
def test_other_schemes_are_refused_naming_the_accepted_forms(url: str) -> None:
    with pytest.raises(ConfigError, match="not known; accepted: file:///absolute/path, or s3://"):
        open_store(url)


def test_an_s3_url_carries_every_option() -> None:
    url = (
        "s3://media.bucket-1/rec/live?endpoint=https://minio.example:9000"
        "&region=eu-west-1&addressing=virtual&multipart_mb=16"
    )
    store = open_store(url)
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint) == (
        "media.bucket-1",
        "rec/live/",
        "https://minio.example:9000",
    )
    assert store.url == (
        "s3://media.bucket-1/rec/live/?endpoint=https://minio.example:9000"
        "&region=eu-west-1&addressing=virtual&multipart_mb=16"
    )
    assert open_store(store.url).url == store.url


def test_an_s3_url_needs_only_the_bucket() -> None:
    store = open_store("s3://recordings")
    assert isinstance(store, S3Store)
    assert (store.bucket, store.prefix, store.endpoint) == ("recordings", "", None)
    assert store.url == "s3://recordings/"


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("s3://", "names no bucket"),
        ("s3:///prefix", "names no bucket"),
        ("s3://key:secret@bucket/x", "AWS_ACCESS_KEY_ID"),
        ("s3://bucket:9000/x", "names only the bucket"),
        ("s3://bucket/x?endpoint=http://u:p@minio:9000", "endpoint with credentials"),
        ("s3://bucket/x?endpoint=ftp://minio", "use http://HOST"),
        ("s3://bucket/x?endpoint=minio:9000", "use http://HOST"),
        ("s3://bucket/x?secret=1", "unknown option 'secret'"),
        ("s3://bucket/x?region=a&region=b", "given twice"),
        ("s3://bucket/x?region=", "is empty"),
        ("s3://bucket/x?region=EU WEST", "not a region name"),
        ("s3://bucket/x?addressing=dns", "'path' or 'virtual'"),
        ("s3://bucket/x?multipart_mb=lots", "whole number"),
        ("s3://bucket/x?multipart_mb=4", "at least 5"),
        ("s3://bucket/x?multipart_mb=-8", "whole number"),
        ("s3://bucket/x?multipart_mb=6000", "at most 5120"),
        ("s3://bucket/x#frag", "no fragment"),
        ("s3://bucket/a/../b", "S3 prefix"),
        ("s3://bucket/a%2fb", "S3 prefix"),
        ("s3://bucket/a//b", "S3 prefix"),
        ("s3://bucket/.hidden", "S3 prefix"),
        ("s3://bucket/" + "p" * 600, "S3 prefix of 600 characters"),
        ("s3://Bucket/x", "bucket name 'Bucket'"),
    ],
)
def test_s3_urls_that_are_refused(url: str, complaint: str) -> None:
    with pytest.raises(ConfigError, match=complaint):
        open_store(url)


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "a" * 64,
        "bucket_name",
        "-bucket",
        "bucket-",
        ".bucket",
        "my..bucket",
        "my.-bucket",
        "my-.bucket",
        "192.168.1.10",
        "xn--bucket",
        "sthree-bucket",
        "bucket-s3alias",
        "bucket--ol-s3",
        "buc%2fket",
    ],
)
def test_bucket_names_s3_refuses(name: str) -> None:
    with pytest.raises(ConfigError, match="is not valid for S3"):
        check_bucket_name(name)


@pytest.mark.parametrize("name", ["abc", "a" * 63, "my.bucket-1", "0recordings9"])
def test_bucket_names_s3_takes(name: str) -> None:
    assert check_bucket_name(name) == name


@pytest.mark.parametrize(
    ("url", "public"),
    [
        (
            "s3://bkt/rec?endpoint=http://127.0.0.1:9000",
            "http://127.0.0.1:9000/bkt/rec/s/1.ts",
        ),
        (
            "s3://bkt/rec?endpoint=http://minio.internal:9000&addressing=path",
            "http://minio.internal:9000/bkt/rec/s/1.ts",
        ),
        (
            "s3://bkt/rec?endpoint=https://r2.example.com&addressing=virtual",
            "https://bkt.r2.example.com/rec/s/1.ts",
        ),
        ("s3://bkt/rec?region=eu-west-1", "https://bkt.s3.eu-west-1.amazonaws.com/rec/s/1.ts"),
        ("s3://bkt", "https://bkt.s3.amazonaws.com/s/1.ts"),
        (
            "s3://bkt/rec?region=eu-west-1&addressing=path",
            "https://s3.eu-west-1.amazonaws.com/bkt/rec/s/1.ts",
        ),
        ("s3://bkt/rec?addressing=virtual", "https://bkt.s3.amazonaws.com/rec/s/1.ts"),
    ],
)
def test_public_urls_follow_the_addressing_style(url: str, public: str) -> None:
    assert open_store(url).public_url("s/1.ts") == public
