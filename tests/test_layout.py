"""The layering rules of ARCHITECTURE.md, checked on the source: who may import what."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("lpstream", "ingest", "workers", "payments")

SANS_IO = [
    *sorted((ROOT / "lpstream" / "wire").glob("*.py")),
    *[ROOT / "ingest" / "rtmp" / f"{m}.py" for m in ("protocol", "chunk", "amf0", "handshake")],
    ROOT / "lpstream" / "playback" / "hls.py",
    ROOT / "lpstream" / "playback" / "llhls.py",
    ROOT / "ingest" / "whip" / "sdp.py",
    ROOT / "ingest" / "whip" / "h264.py",
    ROOT / "ingest" / "whip" / "playout.py",
    ROOT / "lpstream" / "playback" / "packets.py",
    ROOT / "lpstream" / "playback" / "tsdemux.py",
    *sorted((ROOT / "payments" / "pm").glob("*.py")),
]
IO_MODULES = {"trio", "socket", "time", "asyncio", "selectors", "threading"}


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize("path", SANS_IO, ids=lambda p: str(p.relative_to(ROOT)))
def test_protocol_modules_do_no_io(path: Path) -> None:
    used = {name.split(".")[0] for name in imported_modules(path)}
    assert not used & IO_MODULES, f"{path.name} imports {used & IO_MODULES}"


@pytest.mark.parametrize("package", ["ingest", "workers", "payments"])
def test_leaf_packages_import_only_the_shared_base(package: str) -> None:
    allowed = {"lpstream.media", "lpstream.errors"}
    if package == "payments":
        allowed = {"lpstream.errors"}
    for path in sorted((ROOT / package).rglob("*.py")):
        for name in imported_modules(path):
            top = name.split(".")[0]
            if top == "lpstream":
                assert name in allowed, f"{path.relative_to(ROOT)} imports {name}"
            else:
                others = set(PACKAGES) - {package, "lpstream"}
                assert top not in others, f"{path.relative_to(ROOT)} imports {name}"


@pytest.mark.parametrize("module", ["media", "errors"])
def test_the_shared_base_imports_nothing_of_the_project(module: str) -> None:
    used = {name.split(".")[0] for name in imported_modules(ROOT / "lpstream" / f"{module}.py")}
    assert not used & set(PACKAGES)


@pytest.mark.parametrize(
    "package",
    ["lpstream.wire", "lpstream.quic", "ingest.rtmp", "ingest.whip", "payments.pm", "workers"],
)
def test_public_names_are_listed_in_all(package: str) -> None:
    module = __import__(package, fromlist=["__all__"])
    assert module.__all__, package
    for name in module.__all__:
        assert hasattr(module, name), f"{package}.__all__ names missing {name}"
