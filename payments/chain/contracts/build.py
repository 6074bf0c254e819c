"""Compiles the Vyper sources next to this file into ``build/<Name>.json``.

    python -m payments.chain.contracts.build           # write the artifacts
    python -m payments.chain.contracts.build --check   # exit 1 if they are stale

The artifacts are committed so that running a node needs no compiler. Each holds the ABI, the
deployment bytecode, the compiler version and settings, and the SHA-256 of the source it came
from; ``--check`` compiles afresh and compares everything, so CI fails when a source changed
without its artifact or the pinned compiler changed its output.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import sys
from pathlib import Path
from typing import Any

__all__ = [
    "BUILD_DIR",
    "EVM_VERSION",
    "SOURCE_DIR",
    "artifact_text",
    "compile_source",
    "fresh_artifacts",
    "main",
    "sources",
    "stale_artifacts",
]

SOURCE_DIR = Path(__file__).resolve().parent
BUILD_DIR = SOURCE_DIR / "build"
EVM_VERSION = "cancun"
"""Cancun runs on py-evm's Prague VM and on every chain lpstream targets (Arbitrum included)."""


def sources() -> list[Path]:
    """The Vyper sources, in name order."""
    return sorted(SOURCE_DIR.glob("*.vy"))


def compile_source(path: Path) -> dict[str, Any]:
    """One source's artifact: name, compiler, settings, source hash, ABI and bytecode."""
    # vyper ships no type information; imported by name so mypy needs no override for it.
    vyper: Any = importlib.import_module("vyper")
    settings_module: Any = importlib.import_module("vyper.compiler.settings")
    text = path.read_text()
    settings = settings_module.Settings(
        evm_version=EVM_VERSION, optimize=settings_module.OptimizationLevel.GAS
    )
    out = vyper.compile_code(
        text, contract_path=path.name, output_formats=["abi", "bytecode"], settings=settings
    )
    return {
        "contractName": path.stem,
        "compiler": f"vyper-{vyper.__version__}",
        "evmVersion": EVM_VERSION,
        "optimize": "gas",
        "sourceSha256": hashlib.sha256(text.encode()).hexdigest(),
        "abi": out["abi"],
        "bytecode": out["bytecode"],
    }


def artifact_text(artifact: dict[str, Any]) -> str:
    """The artifact as it is written: sorted keys, two-space indent, a final newline."""
    return json.dumps(artifact, indent=2, sort_keys=True) + "\n"


def fresh_artifacts() -> dict[str, str]:
    """Every source compiled now: artifact file name -> the text ``build.py`` would write."""
    return {f"{p.stem}.json": artifact_text(compile_source(p)) for p in sources()}


def stale_artifacts(expected: dict[str, str], build_dir: Path = BUILD_DIR) -> list[str]:
    """What in ``build_dir`` differs from ``expected``: one line per file, empty if nothing."""
    present = {p.name for p in build_dir.glob("*.json")}
    problems = [
        f"stale or missing: build/{name}"
        for name, text in sorted(expected.items())
        if name not in present or (build_dir / name).read_text() != text
    ]
    problems += [f"no source for: build/{name}" for name in sorted(present - expected.keys())]
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m payments.chain.contracts.build")
    parser.add_argument(
        "--check", action="store_true", help="compare with the committed artifacts, write nothing"
    )
    args = parser.parse_args(argv)
    expected = fresh_artifacts()
    if args.check:
        problems = stale_artifacts(expected, BUILD_DIR)
        for line in problems:
            print(line, file=sys.stderr)
        if problems:
            print("run: python -m payments.chain.contracts.build", file=sys.stderr)
        return 1 if problems else 0
    BUILD_DIR.mkdir(exist_ok=True)
    for name, text in expected.items():
        (BUILD_DIR / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
