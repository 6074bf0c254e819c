"""The layering rules of ARCHITECTURE.md, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lpstream", "ingest", "workers", "payments")
EDGES = ("ingest", "workers", "payments")

SANS_IO = [
    *sorted((ROOT / "lpstream" / "wire").glob("*.py")),
    *sorted((ROOT / "lpstream" / "media").glob("*.py")),
    *[
        ROOT / "ingest" / "rtmp" / f"{m}.py"
        for m in ("protocol", "chunk", "amf0", "handshake", "events", "flv", "enhanced", "commands")
    ],
    ROOT / "lpstream" / "playback" / "hls.py",
    *[
        ROOT / "lpstream" / "playback" / f"llhls{m}.py"
        for m in ("", "_playlist", "_render", "_requests")
    ],
    *[
        ROOT / "ingest" / "segmenter" / f"{m}.py"
        for m in ("segmenter", "timeline", "parts", "events")
    ],
    *[ROOT / "ingest" / "srt" / f"{m}.py" for m in ("streamid", "tsdemux", "adts", "interleave")],
    *[ROOT / "lpstream" / "storage" / f"{m}.py" for m in ("stored_hls", "recordings", "origin")],
    ROOT / "lpstream" / "gateway" / "live_failover.py",
    *[ROOT / "lpstream" / "gateway" / f"{m}.py" for m in ("ai_requests", "ai_answers")],
    ROOT / "lpstream" / "http" / "multipart.py",
    ROOT / "lpstream" / "json_depth.py",
    ROOT / "ingest" / "whip" / "sdp.py",
    ROOT / "ingest" / "whip" / "h264.py",
    ROOT / "ingest" / "whip" / "vp8.py",
    ROOT / "ingest" / "whip" / "av1.py",
    ROOT / "ingest" / "whip" / "keyframes.py",
    ROOT / "ingest" / "whip" / "playout.py",
    ROOT / "lpstream" / "playback" / "packets.py",
    ROOT / "lpstream" / "playback" / "tsdemux.py",
    *sorted((ROOT / "payments" / "pm").glob("*.py")),
]
IO_MODULES = {"trio", "socket", "time", "asyncio", "selectors", "threading"}


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports by absolute name; ``from a.b import c`` counts as
    ``a.b`` and, when ``a/b/c`` is a module or package of the project, as ``a.b.c`` too."""
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(
                f"{node.module}.{alias.name}"
                for alias in node.names
                if _source_of(f"{node.module}.{alias.name}") is not None
            )
    return names


def _source_of(module: str) -> Path | None:
    """The file of a project module or package, None for anything else."""
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _in_media(name: str) -> bool:
    return name == "lpstream.media" or name.startswith("lpstream.media.")


def _relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.mark.parametrize("path", SANS_IO, ids=_relative)
def test_protocol_modules_do_no_io(path: Path) -> None:
    used = {name.split(".")[0] for name in imported_modules(path)}
    assert not used & IO_MODULES, f"{path.name} imports {used & IO_MODULES}"


@pytest.mark.parametrize("package", EDGES)
def test_edges_import_only_the_shared_base(package: str) -> None:
    """ingest and workers may use ``lpstream.media`` (and its modules) and
    ``lpstream.errors``; payments only ``lpstream.errors``; no edge imports another."""
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "lpstream":
                allowed = name == "lpstream.errors" or (package != "payments" and _in_media(name))
                assert allowed, f"{_relative(path)} imports {name}"
            else:
                others = set(PACKAGES) - {package, "lpstream"}
                assert top not in others, f"{_relative(path)} imports {name}"


def test_the_shared_base_imports_nothing_else_of_the_project() -> None:
    """``lpstream.media`` (its modules may use each other) and ``lpstream.errors``."""
    base = [*sorted((ROOT / "lpstream" / "media").glob("*.py")), ROOT / "lpstream" / "errors.py"]
    for path in base:
        for name in imported_modules(path):
            if name.split(".")[0] in PACKAGES:
                assert _in_media(name) or name == "lpstream.errors", (
                    f"{_relative(path)} imports {name}"
                )


@pytest.mark.parametrize("area", ["playback", "http"])
def test_playback_and_http_use_the_edges_through_their_public_names(area: str) -> None:
    """``from ingest.whip import WhepPlayback`` (a package's ``__init__``) is fine;
    ``ingest.whip.h264`` or ``ingest.segmenter`` (a module inside an edge) is not."""
    for path in sorted((ROOT / "lpstream" / area).rglob("*.py")):
        for name in imported_modules(path):
            if name.split(".")[0] not in EDGES:
                continue
            source = _source_of(name)
            assert source is not None and source.name == "__init__.py", (
                f"{_relative(path)} imports {name}, inside an edge: use its package's names"
            )


@pytest.mark.parametrize("path", sorted((ROOT / "benchmarks").rglob("*.py")), ids=_relative)
def test_benchmarks_never_import_tests(path: Path) -> None:
    tests = {name for name in imported_modules(path) if name.split(".")[0] == "tests"}
    assert not tests, f"{_relative(path)} imports {sorted(tests)}"


@pytest.mark.parametrize(
    "package",
    [
        "lpstream.wire",
        "lpstream.quic",
        "lpstream.media",
        "lpstream.media.h264",
        "lpstream.media.mpegts",
        "lpstream.storage",
        "ingest.rtmp",
        "ingest.srt",
        "ingest.whip",
        "payments.pm",
        "workers",
    ],
)
def test_public_names_are_listed_in_all(package: str) -> None:
    module = __import__(package, fromlist=["__all__"])
    assert module.__all__, package
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"
