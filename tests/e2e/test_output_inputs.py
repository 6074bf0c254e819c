"""Names a client chooses never lead out of the record store, and a store that cannot be used
stops the node at start.

A gateway with ``--record-store`` (a directory, or a prefix of a real S3 bucket) holds one
stored recording; beside the store lie sentinel objects (a file next to the directory; keys
outside the prefix, one of them in a sibling prefix that shares its first letters). Stream
names and recording ids with ``..``, ``/``, ``%2f`` or over-long, on ``/vod/``,
``/api/recordings``, ``/api/streams/{name}/record`` and the watch page, get 400 or 404; no
answer carries a sentinel, and nothing is written anywhere. Start-up: a missing bucket,
refused credentials, a plain path and ``--record`` without a store each stop ``lpstream dev``
with a message that says what is wrong.
"""

from __future__ import annotations

import http.client
import json
import subprocess
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import attrs
import pytest

from benchmarks.harness.objects import S3Server, running_s3
from tests.e2e.nodes import LOOPBACK_PORTS, LPSTREAM, running_dev
from tests.e2e.stored_media import bucket_keys, gateway_http

STREAM = "seeded"
RECORDING = "20260101T000000Z"
SENTINEL = b"#EXTM3U\n# sentinel: outside the store, never served\n"
MASTER = b'#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1000,NAME="source"\nsource/index.m3u8\n'
MEDIA = (
    b"#EXTM3U\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-TARGETDURATION:2\n"
    b"#EXTINF:2.000,\n0.ts\n#EXT-X-ENDLIST\n"
)
SEGMENT = b"\x47" + bytes(187)
MANIFEST = json.dumps(
    {
        "stream": STREAM,
        "id": RECORDING,
        "state": "ended",
        "started_at": 1767225600.0,
        "ended_at": 1767225602.0,
        "renditions": {"source": {"segments": 1, "duration": 2.0, "bytes": len(SEGMENT)}},
        "lost_segments": 0,
    }
).encode()
RECORDING_OBJECTS = {
    "index.m3u8": MASTER,
    "recording.json": MANIFEST,
    "source/index.m3u8": MEDIA,
    "source/0.ts": SEGMENT,
}
LONG = "a" * 300


@attrs.frozen
class Guarded:
    """A running gateway whose record store is surrounded by sentinels."""

    base: str
    untouched: Callable[[], None]
    """Fails the test if anything outside (or inside) the store changed."""


def _seed_directory(tmp: Path) -> tuple[str, Callable[[], None]]:
    root = tmp / "store"
    for path, data in RECORDING_OBJECTS.items():
        target = root / STREAM / RECORDING / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    for outside in ("secret.m3u8", "store-other/seeded/20260101T000000Z/index.m3u8"):
        (tmp / outside).parent.mkdir(parents=True, exist_ok=True)
        (tmp / outside).write_bytes(SENTINEL)
    before = _tree(tmp)

    def untouched() -> None:
        assert _tree(tmp) == before

    return root.as_uri(), untouched


def _tree(top: Path) -> dict[str, tuple[bytes, int]]:
    return {
        str(path.relative_to(top)): (path.read_bytes(), path.stat().st_mtime_ns)
        for path in sorted(top.rglob("*"))
        if path.is_file()
    }


def _seed_bucket(s3: S3Server) -> tuple[str, Callable[[], None]]:
    client = s3.client()
    for path, data in RECORDING_OBJECTS.items():
        client.put_object(Bucket=s3.bucket, Key=f"rec/{STREAM}/{RECORDING}/{path}", Body=data)
    for outside in (
        "secret.m3u8",
        f"{STREAM}/{RECORDING}/index.m3u8",  # the same recording's name outside the prefix
        f"recx/{STREAM}/{RECORDING}/index.m3u8",  # a prefix that starts like the store's
    ):
        client.put_object(Bucket=s3.bucket, Key=outside, Body=SENTINEL)
    before = bucket_keys(s3)

    def untouched() -> None:
        after = bucket_keys(s3)
        assert after == before, sorted(set(after) ^ set(before))

    return s3.store_url("rec"), untouched


@pytest.fixture(scope="module", params=["file", "s3"])
def guarded(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Guarded]:
    with ExitStack() as stack:
        if request.param == "s3":
            store, untouched = _seed_bucket(stack.enter_context(running_s3()))
        else:
            store, untouched = _seed_directory(tmp_path_factory.mktemp("beside"))
        node = stack.enter_context(
            running_dev(tmp_path_factory.mktemp("logs"), "--record-store", store)
        )
        yield Guarded(base=gateway_http(node), untouched=untouched)


def _request(base: str, method: str, target: str) -> tuple[int, bytes]:
    """Sends ``target`` exactly as written (no client normalises its ``..`` or ``%2f``)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, target)
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


VOD = f"/vod/{STREAM}/{RECORDING}"


def test_the_stored_recording_is_served(guarded: Guarded) -> None:
    # The sound requests work: the refusals below are the names' doing.
    assert _request(guarded.base, "GET", f"{VOD}/index.m3u8") == (200, MASTER)
    assert _request(guarded.base, "GET", f"{VOD}/source/index.m3u8") == (200, MEDIA)
    assert _request(guarded.base, "GET", f"{VOD}/source/0.ts") == (200, SEGMENT)
    status, body = _request(guarded.base, "GET", f"/api/recordings?stream={STREAM}")
    assert status == 200 and [r["id"] for r in json.loads(body)["recordings"]] == [RECORDING]
    status, page = _request(guarded.base, "GET", f"/watch/{STREAM}?recording={RECORDING}")
    assert status == 200 and f"{VOD}/index.m3u8".encode() in page
    guarded.untouched()


@pytest.mark.parametrize(
    "target",
    [
        f"{VOD}/../../../secret.m3u8",
        f"{VOD}/..%2f..%2f..%2fsecret.m3u8",
        f"{VOD}/%2e%2e/%2e%2e/%2e%2e/secret.m3u8",
        f"{VOD}/source/..%2f..%2f..%2f..%2fsecret.m3u8",
        f"{VOD}/../../../store-other/{STREAM}/{RECORDING}/index.m3u8",
        f"/vod/{STREAM}/../../secret.m3u8",
        f"/vod/{STREAM}/..%2f..%2fsecret.m3u8/index.m3u8",
        f"/vod/..%2f{STREAM}/{RECORDING}/index.m3u8",
        f"/vod/..%2frecx%2f{STREAM}/{RECORDING}/index.m3u8",
        f"/vod/..%2f..%2frecx%2f{STREAM}/{RECORDING}/index.m3u8",
        f"/vod/{STREAM}%2f{RECORDING}/{RECORDING}/index.m3u8",
        f"/vod/{STREAM}/{RECORDING}%2f..%2f{RECORDING}/index.m3u8",
        f"/vod/{STREAM}/..{RECORDING}/index.m3u8",
        f"/vod/.{STREAM}/{RECORDING}/index.m3u8",
        f"/vod/{LONG}/{RECORDING}/index.m3u8",
        f"/vod/{STREAM}/{RECORDING}{'0' * 300}/index.m3u8",
        f"{VOD}/{LONG}/index.m3u8",
        f"{VOD}/source/{'1' * 300}.ts",
        f"{VOD}/recording.json%00.ts",
    ],
)
def test_vod_refuses_names_that_leave_the_store(guarded: Guarded, target: str) -> None:
    status, body = _request(guarded.base, "GET", target)
    assert status in (400, 404), (target, status, body[:200])
    assert b"sentinel" not in body and body != MASTER
    guarded.untouched()


@pytest.mark.parametrize(
    "query",
    ["..", "../seeded", "a/b", "a%2fb", "%2e%2e", "..%2f..%2fsecret", ".hidden", "", LONG],
)
def test_the_listing_refuses_bad_stream_names(guarded: Guarded, query: str) -> None:
    status, body = _request(guarded.base, "GET", f"/api/recordings?stream={query}")
    assert status == 400, (query, status, body[:200])
    assert b"sentinel" not in body and RECORDING.encode() not in body
    guarded.untouched()


@pytest.mark.parametrize("method", ["POST", "GET", "DELETE"])
@pytest.mark.parametrize("name", ["..", "..%2f..%2fsecret", "a%2fb", ".hidden", LONG])
def test_the_record_api_refuses_bad_stream_names(guarded: Guarded, method: str, name: str) -> None:
    status, body = _request(guarded.base, method, f"/api/streams/{name}/record")
    assert status in (400, 404), (name, status, body[:200])
    guarded.untouched()


def test_the_record_api_records_no_stream_that_is_not_live(guarded: Guarded) -> None:
    status, body = _request(guarded.base, "POST", f"/api/streams/{STREAM}/record")
    assert status == 404, body
    guarded.untouched()


@pytest.mark.parametrize(
    "target",
    [
        f"/watch/{STREAM}?recording=..%2f..%2f..%2fsecret",
        f"/watch/{STREAM}?recording={RECORDING}%2f..%2f..",
        f"/watch/{STREAM}?recording=..",
        f"/watch/{STREAM}?recording={RECORDING}{'0' * 300}",
        f"/watch/{STREAM}?recording=",
        f"/watch/..%2f{STREAM}?recording={RECORDING}",
        f"/watch/{LONG}?recording={RECORDING}",
    ],
)
def test_the_watch_page_refuses_bad_names(guarded: Guarded, target: str) -> None:
    status, body = _request(guarded.base, "GET", target)
    assert status in (400, 404), (target, status, body[:200])
    assert b"/vod/" not in body
    guarded.untouched()


def _start_dev(*flags: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*LPSTREAM, "dev", "--offchain", *LOOPBACK_PORTS, *flags],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )


def _refused(done: subprocess.CompletedProcess[str], *words: str) -> None:
    message = done.stderr.strip().splitlines()[-1] if done.stderr.strip() else ""
    assert done.returncode != 0, done.stdout[-2000:]
    assert "ready" not in done.stdout
    assert message.startswith("Error:") and all(w in message for w in words), done.stderr


# moto keeps every server's buckets in this process's memory: a bucket of its own, so the
# module's gateway's bucket (still in use) is left alone.
STARTUP_BUCKET = "lpstream-startup"


def test_a_missing_bucket_stops_the_node() -> None:
    with running_s3(STARTUP_BUCKET) as s3:
        done = _start_dev(
            "--record-store", f"s3://missing-bucket/rec?endpoint={s3.endpoint}&region=us-east-1"
        )
        _refused(done, "--record-store", "missing-bucket", "does not exist")


def test_refused_credentials_stop_the_node() -> None:
    with running_s3(STARTUP_BUCKET) as s3, s3.refusing_credentials():
        done = _start_dev("--hls-origin", s3.store_url("live"))
        _refused(done, "--hls-origin", s3.bucket)
        assert any(w in done.stderr.lower() for w in ("credential", "access", "denied")), (
            done.stderr
        )


@pytest.mark.parametrize(
    ("flags", "words"),
    [
        (("--record-store", "/plain/path"), ("'/plain/path'", "file:///")),
        (("--hls-origin", "relative/dir"), ("'relative/dir'", "file:///")),
        (("--record",), ("--record", "--record-store")),
        (("--record-retention", "7d"), ("--record-retention", "--record-store")),
    ],
)
def test_a_store_flag_that_names_no_store_stops_the_node(
    flags: tuple[str, ...], words: tuple[str, ...]
) -> None:
    _refused(_start_dev(*flags), *words)
