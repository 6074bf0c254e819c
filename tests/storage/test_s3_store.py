"""The S3 store against a real S3-compatible server on loopback (moto's server mode, reached
only over HTTP): round trips, headers a plain HTTP client sees, multipart, and the errors of
start-up and of a store that goes away."""

from __future__ import annotations

import os
import re
import socket
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from benchmarks.harness.objects import S3Server, running_s3
from lpstream.storage import InvalidKey, S3Store, StoreError, StoreUnavailable, open_store

TS = "video/mp2t"
PLAYLIST = "application/vnd.apple.mpegurl"
IMMUTABLE = "public, max-age=31536000, immutable"
MIB = 1024 * 1024

BAD_KEYS = [
    "",
    "../escape.ts",
    "a/../../escape.ts",
    "/escape.ts",
    "a//b.ts",
    ".hidden",
    "a%2fb.ts",
    "%2e%2e/escape.ts",
    "x" * 513,
]

AWS_VARIABLES = [
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_SECURITY_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_ROLE_ARN",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
]


@pytest.fixture(scope="module")
def s3() -> Iterator[S3Server]:
    with running_s3() as server:
        yield server


def names_in_bucket(s3: S3Server) -> list[str]:
    pages = s3.client().get_paginator("list_objects_v2").paginate(Bucket=s3.bucket)
    return sorted(item["Key"] for page in pages for item in page.get("Contents", ()))


def http_get(url: str) -> tuple[bytes, dict[str, str]]:
    """The body and the headers (names in lower case) of a plain GET."""
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.read(), {name.lower(): value for name, value in response.headers.items()}


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def no_aws_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Nothing in boto3's credential chain: no variables, no files, no instance metadata."""
    for name in AWS_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-credentials"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-config"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")


def test_the_harness_lends_its_variables_and_cleans_up(s3: S3Server) -> None:
    before = dict(os.environ)
    with running_s3("harness-check") as other:
        assert os.environ["AWS_ACCESS_KEY_ID"] == other.env["AWS_ACCESS_KEY_ID"]
        other.client().put_object(Bucket="harness-check", Key="k.ts", Body=b"v")
        assert http_get(other.object_url("k.ts"))[0] == b"v"
        endpoint = other.endpoint
    assert dict(os.environ) == before
    buckets = [bucket["Name"] for bucket in s3.client().list_buckets()["Buckets"]]
    assert buckets == [s3.bucket]
    with pytest.raises(OSError):
        http_get(endpoint)


async def test_put_get_list_delete_round_trip(s3: S3Server) -> None:
    store = open_store(s3.store_url("round"))
    await store.check()
    await store.put("live/720p/1.ts", b"segment one", content_type=TS, cache_control=IMMUTABLE)
    await store.put("live/720p/index.m3u8", b"#EXTM3U\n", content_type=PLAYLIST, cache_control="")

    assert await store.get("live/720p/1.ts") == b"segment one"
    assert "round/live/720p/1.ts" in names_in_bucket(s3)
    listing = await store.list("live/")
    assert [info.key for info in listing] == ["live/720p/1.ts", "live/720p/index.m3u8"]
    assert listing[0].size == len(b"segment one")
    assert listing[0].modified > 1.6e9

    await store.delete("live/720p/1.ts")
    assert await store.get("live/720p/1.ts") is None
    assert [info.key for info in await store.list("")] == ["live/720p/index.m3u8"]


async def test_missing_objects_read_as_none_and_delete_quietly(s3: S3Server) -> None:
    store = open_store(s3.store_url("missing"))
    assert await store.get("nothing.ts") is None
    await store.delete("nothing/here.ts")


async def test_a_plain_http_get_sees_the_content_type_and_cache_control(s3: S3Server) -> None:
    store = open_store(s3.store_url("headers"))
    await store.put("s/1.ts", b"\x47" * 188, content_type=TS, cache_control=IMMUTABLE)
    await store.put("s/index.m3u8", b"#EXTM3U\n", content_type=PLAYLIST, cache_control="max-age=1")

    url = store.public_url("s/1.ts")
    assert url == s3.object_url("headers/s/1.ts")
    body, headers = await trio.to_thread.run_sync(http_get, url)
    assert body == b"\x47" * 188
    assert headers["content-type"] == TS
    assert headers["cache-control"] == IMMUTABLE

    url = store.public_url("s/index.m3u8")
    assert url is not None
    body, headers = await trio.to_thread.run_sync(http_get, url)
    assert (body, headers["content-type"], headers["cache-control"]) == (
        b"#EXTM3U\n",
        PLAYLIST,
        "max-age=1",
    )


async def test_objects_at_the_multipart_size_go_up_in_parts(s3: S3Server) -> None:
    store = open_store(s3.store_url("parts") + "&multipart_mb=5")
    data = bytes(range(256)) * (6 * MIB // 256)
    await store.put("big.ts", data, content_type=TS, cache_control=IMMUTABLE)
    await store.put("small.ts", data[: 4 * MIB], content_type=TS, cache_control=IMMUTABLE)

    head = s3.client().head_object(Bucket=s3.bucket, Key="parts/big.ts")
    assert head["ETag"].strip('"').endswith("-2")  # 5 MiB + 1 MiB: two parts
    assert head["ContentType"] == TS
    assert head["CacheControl"] == IMMUTABLE
    small = s3.client().head_object(Bucket=s3.bucket, Key="parts/small.ts")
    assert "-" not in small["ETag"]
    assert await store.get("big.ts") == data


async def test_listing_stays_inside_the_prefix_in_key_order(s3: S3Server) -> None:
    client = s3.client()
    client.put_object(Bucket=s3.bucket, Key="lister-other/a.ts", Body=b"not ours")
    client.put_object(Bucket=s3.bucket, Key="lister/odd name.ts", Body=b"not a key")
    store = open_store(s3.store_url("lister"))
    for key in ["a/b/2.ts", "a/b/10.ts", "a/c.ts", "ab/x.ts"]:
        await store.put(key, key.encode(), content_type=TS, cache_control="")
    assert [i.key for i in await store.list("")] == ["a/b/10.ts", "a/b/2.ts", "a/c.ts", "ab/x.ts"]
    assert [i.key for i in await store.list("a/")] == ["a/b/10.ts", "a/b/2.ts", "a/c.ts"]
    assert [i.key for i in await store.list("a/b/1")] == ["a/b/10.ts"]


async def test_listing_follows_pages(s3: S3Server) -> None:
    store = open_store(s3.store_url("pages"))
    client = s3.client()
    for i in range(1005):  # list_objects_v2 answers 1000 at most per page
        client.put_object(Bucket=s3.bucket, Key=f"pages/k/{i:05d}", Body=b"")
    keys = [info.key for info in await store.list("k/")]
    assert keys == [f"k/{i:05d}" for i in range(1005)]
    for start in (0, 1000):  # the other tests list the whole bucket: keep it small
        names = [{"Key": f"pages/k/{i:05d}"} for i in range(start, min(start + 1000, 1005))]
        client.delete_objects(Bucket=s3.bucket, Delete={"Objects": names})


async def test_the_store_url_round_trips_without_credentials(s3: S3Server) -> None:
    store = open_store(s3.store_url("p/q"))
    assert isinstance(store, S3Store)
    assert store.url == f"s3://{s3.bucket}/p/q/?endpoint={s3.endpoint}&region=us-east-1"
    assert open_store(store.url).url == store.url
    assert s3.env["AWS_SECRET_ACCESS_KEY"] not in store.url
    assert s3.env["AWS_ACCESS_KEY_ID"] not in store.url


async def test_check_names_a_missing_bucket(s3: S3Server) -> None:
    store = S3Store(bucket="no-such-bucket", endpoint=s3.endpoint, region="us-east-1")
    missing = re.escape(f"bucket no-such-bucket does not exist at {s3.endpoint}")
    with pytest.raises(StoreUnavailable, match=missing):
        await store.check()
    with pytest.raises(StoreUnavailable, match="does not exist"):
        await store.put("a.ts", b"x", content_type=TS, cache_control="")


async def test_check_reports_refused_credentials(s3: S3Server) -> None:
    store = open_store(s3.store_url("refused"))
    with s3.refusing_credentials():
        with pytest.raises(StoreUnavailable, match=r"credentials refused by .* for bucket"):
            await store.check()
        with pytest.raises(StoreUnavailable, match="credentials refused"):
            await store.put("a.ts", b"x", content_type=TS, cache_control="")
    await store.check()  # the same store works once the keys are accepted again


@pytest.mark.usefixtures("no_aws_credentials")
async def test_check_reports_no_credentials_at_all(s3: S3Server) -> None:
    store = open_store(s3.store_url())
    with pytest.raises(StoreUnavailable, match="no AWS credentials: set AWS_ACCESS_KEY_ID"):
        await store.check()


@pytest.mark.usefixtures("no_aws_credentials")
async def test_check_reports_a_profile_that_does_not_exist(
    s3: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_PROFILE", "no-such-profile")
    store = open_store(s3.store_url())
    with pytest.raises(StoreUnavailable, match=r"no AWS credentials: .*no-such-profile"):
        await store.check()


async def test_an_unreachable_endpoint_fails_within_seconds() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    store = S3Store(bucket="lpstream", endpoint=endpoint, region="us-east-1")
    started = trio.current_time()
    with pytest.raises(StoreUnavailable, match=f"cannot reach {endpoint}"):
        await store.check()
    assert trio.current_time() - started < 8


async def test_a_store_that_stops_fails_writes_then_takes_them_again(s3: S3Server) -> None:
    store = open_store(s3.store_url("restart"))
    await store.put("before.ts", b"kept", content_type=TS, cache_control="")
    s3.stop()
    try:
        started = trio.current_time()
        with pytest.raises(StoreError, match="cannot reach"):
            await store.put("during.ts", b"lost", content_type=TS, cache_control="")
        assert trio.current_time() - started < 8
    finally:
        s3.start()
    await store.put("after.ts", b"back", content_type=TS, cache_control="")
    assert await store.get("before.ts") == b"kept"
    assert await store.get("after.ts") == b"back"
    assert await store.get("during.ts") is None


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda key: repr(key[:20]))
async def test_bad_keys_are_refused_and_write_nothing(s3: S3Server, key: str) -> None:
    store = open_store(s3.store_url("confined"))
    before = names_in_bucket(s3)
    with pytest.raises(InvalidKey):
        await store.put(key, b"x", content_type=TS, cache_control="")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    with pytest.raises(InvalidKey):
        store.public_url(key)
    assert names_in_bucket(s3) == before


@pytest.mark.parametrize("prefix", ["../", "/", "a//", "%2e%2e/", ".."])
async def test_bad_listing_prefixes_are_refused(s3: S3Server, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await open_store(s3.store_url("confined")).list(prefix)
