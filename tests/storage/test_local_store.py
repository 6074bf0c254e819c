"""The directory store: atomic writes, listings, deletes that tidy up, and keys that cannot
leave the root."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
import trio

from lpstream.storage import InvalidKey, LocalStore, StoreError, StoreUnavailable

TS = "video/mp2t"
IMMUTABLE = "public, max-age=31536000, immutable"

BAD_KEYS = [
    "",
    "../escape.ts",
    "a/../../escape.ts",
    "/etc/passwd",
    "a//b.ts",
    "a/b/",
    "./a.ts",
    ".hidden",
    "a%2fb.ts",
    "%2e%2e/escape.ts",
    "a\\..\\escape.ts",
    "a/\0.ts",
    "x" * 513,
]


def every_path(root: Path) -> set[Path]:
    return set(root.rglob("*"))


async def test_put_get_list_delete_round_trip(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    await store.check()
    await store.put("live/720p/1.ts", b"segment one", content_type=TS, cache_control=IMMUTABLE)
    await store.put("live/720p/index.m3u8", b"#EXTM3U\n", content_type=TS, cache_control="")

    assert await store.get("live/720p/1.ts") == b"segment one"
    assert (tmp_path / "store" / "live" / "720p" / "1.ts").read_bytes() == b"segment one"
    listing = await store.list("live/")
    assert [info.key for info in listing] == ["live/720p/1.ts", "live/720p/index.m3u8"]
    assert listing[0].size == len(b"segment one")
    assert abs(listing[0].modified - time.time()) < 60

    await store.delete("live/720p/1.ts")
    assert await store.get("live/720p/1.ts") is None
    assert [info.key for info in await store.list("")] == ["live/720p/index.m3u8"]


async def test_missing_objects_read_as_none_and_delete_quietly(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("a/b.ts", b"x", content_type=TS, cache_control="")
    assert await store.get("nothing.ts") is None
    assert await store.get("a") is None  # a folder of objects is not an object
    await store.delete("nothing/here.ts")
    await store.delete("a")
    assert await store.get("a/b.ts") == b"x"


async def test_list_matches_the_prefix_as_a_string_in_key_order(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for key in ["a/b/2.ts", "a/b/10.ts", "a/c.ts", "ab/x.ts", "b.ts"]:
        await store.put(key, key.encode(), content_type=TS, cache_control="")
    assert [i.key for i in await store.list("")] == [
        "a/b/10.ts",
        "a/b/2.ts",
        "a/c.ts",
        "ab/x.ts",
        "b.ts",
    ]
    assert [i.key for i in await store.list("a/")] == ["a/b/10.ts", "a/b/2.ts", "a/c.ts"]
    assert [i.key for i in await store.list("a")] == ["a/b/10.ts", "a/b/2.ts", "a/c.ts", "ab/x.ts"]
    assert [i.key for i in await store.list("a/b/1")] == ["a/b/10.ts"]
    assert await store.list("zzz/") == []


async def test_a_write_replaces_whole_and_leaves_no_temporary_file(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("p/index.m3u8", b"old" * 1000, content_type=TS, cache_control="")
    await store.put("p/index.m3u8", b"new", content_type=TS, cache_control="")
    assert await store.get("p/index.m3u8") == b"new"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["index.m3u8"]


async def test_files_of_writes_in_progress_are_not_listed(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    await store.put("p/1.ts", b"done", content_type=TS, cache_control="")
    (tmp_path / "p" / ".2.ts.0a1b2c.part").write_bytes(b"half")
    (tmp_path / ".probe-1234").write_bytes(b"")
    assert [info.key for info in await store.list("")] == ["p/1.ts"]


async def test_delete_removes_the_folders_it_empties_but_not_the_root(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    await store.put("s/rec/720p/1.ts", b"1", content_type=TS, cache_control="")
    await store.put("s/other.ts", b"2", content_type=TS, cache_control="")
    await store.delete("s/rec/720p/1.ts")
    assert not (root / "s" / "rec").exists()
    assert (root / "s" / "other.ts").exists()
    await store.delete("s/other.ts")
    assert root.is_dir() and list(root.iterdir()) == []


async def test_writes_racing_deletes_of_the_same_folder_all_land(tmp_path: Path) -> None:
    """A delete that empties a folder removes it; a write into that folder at the same time
    must still land."""
    store = LocalStore(tmp_path)
    rounds = 150

    async def write(i: int) -> None:
        await store.put(f"r/x/{i}.ts", b"%d" % i, content_type=TS, cache_control="")

    await write(0)
    for i in range(1, rounds):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(store.delete, f"r/x/{i - 1}.ts")
            nursery.start_soon(write, i)
    assert [info.key for info in await store.list("r/")] == [f"r/x/{rounds - 1}.ts"]


async def test_check_creates_the_directory(tmp_path: Path) -> None:
    root = tmp_path / "not" / "yet"
    store = LocalStore(root)
    await store.check()
    assert root.is_dir()
    assert list(root.iterdir()) == []  # the probe is gone
    assert store.url == root.as_uri()
    assert store.public_url("a.ts") is None


async def test_check_refuses_a_directory_it_cannot_make(tmp_path: Path) -> None:
    (tmp_path / "file").write_bytes(b"in the way")
    store = LocalStore(tmp_path / "file" / "store")
    with pytest.raises(StoreUnavailable, match="cannot be used as a store"):
        await store.check()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
async def test_check_refuses_a_read_only_directory(tmp_path: Path) -> None:
    root = tmp_path / "ro"
    root.mkdir()
    root.chmod(0o555)
    try:
        with pytest.raises(StoreUnavailable, match="cannot be used as a store"):
            await LocalStore(root).check()
    finally:
        root.chmod(0o755)


@pytest.mark.parametrize("key", BAD_KEYS, ids=lambda key: repr(key[:20]))
async def test_bad_keys_are_refused_and_write_nothing(tmp_path: Path, key: str) -> None:
    root = tmp_path / "store"
    store = LocalStore(root)
    await store.check()
    before = every_path(tmp_path)
    with pytest.raises(InvalidKey):
        await store.put(key, b"x", content_type=TS, cache_control="")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert every_path(tmp_path) == before


@pytest.mark.parametrize("prefix", ["../", "/", "a//", "%2e%2e/", ".."])
async def test_bad_listing_prefixes_are_refused(tmp_path: Path, prefix: str) -> None:
    with pytest.raises(InvalidKey):
        await LocalStore(tmp_path).list(prefix)


async def test_a_link_inside_the_root_cannot_lead_out_of_it(tmp_path: Path) -> None:
    root = tmp_path / "store"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.ts").write_bytes(b"secret")
    (root / "link").symlink_to(outside, target_is_directory=True)
    store = LocalStore(root)
    with pytest.raises(StoreError, match="outside"):
        await store.put("link/new.ts", b"x", content_type=TS, cache_control="")
    with pytest.raises(StoreError, match="outside"):
        await store.get("link/secret.ts")
    with pytest.raises(StoreError, match="outside"):
        await store.delete("link/secret.ts")
    with pytest.raises(StoreError, match="outside"):
        await store.list("link/")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.ts"]
    assert await store.list("") == []  # the link is not walked into
