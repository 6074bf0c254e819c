"""Shared test fixtures.

``dev_node`` is the one ``lpstream dev --offchain`` of a test module: its tests share it and
tell their streams apart by name. A module whose node needs flags of its own (a ladder, a WHIP
host) overrides ``dev_flags``; a test that needs a node to itself (other limits, a paid chain)
uses ``tests.e2e.nodes.running_dev`` directly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.nodes import NodeProcess, running_dev


@pytest.fixture(scope="module")
def dev_flags() -> tuple[str, ...]:
    """Extra ``lpstream dev`` flags for the module's ``dev_node``; none unless overridden."""
    return ()


@pytest.fixture(scope="module")
def dev_node(
    tmp_path_factory: pytest.TempPathFactory, dev_flags: tuple[str, ...]
) -> Iterator[NodeProcess]:
    """``lpstream dev --offchain`` with ``dev_flags``, shared by a module; it must exit 0."""
    with running_dev(tmp_path_factory.mktemp("dev"), *dev_flags) as node:
        yield node
