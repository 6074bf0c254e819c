"""The node's whole configuration: every section by name, the defaults that differ by command,
and :class:`Config`, built once from what the flags, the environment and the file gave.

Each setting is declared once, with its default, in its section (:mod:`.serving`,
:mod:`.market`, :mod:`.compute`, :mod:`.outputs`, and :class:`NodeSection` here; see
:mod:`.setting` for how).
The few defaults that differ by command on purpose are in :data:`ROLE_DEFAULTS`, with the
reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import attrs

from lpstream.config.compute import AiSection, WorkerSection
from lpstream.config.market import (
    ChainSection,
    OrchestratorSection,
    PaymentsSection,
    SelectionSection,
)
from lpstream.config.outputs import OutputsSection
from lpstream.config.serving import (
    AccessSection,
    HttpSection,
    IngestSection,
    LimitsSection,
    PlaybackSection,
)
from lpstream.config.setting import setting

__all__ = ["ROLE_DEFAULTS", "SECTIONS", "Config", "NodeSection"]


@attrs.frozen(kw_only=True)
class NodeSection:
    """The process itself."""

    log_level: str = setting(
        "info", "How much to log (to stderr).", choices=("debug", "info", "warning", "error")
    )
    demo_stream: str | None = setting(
        None, "Push a test pattern into this stream name with ffmpeg."
    )


SECTIONS: Mapping[str, type] = {
    "ingest": IngestSection,
    "playback": PlaybackSection,
    "outputs": OutputsSection,
    "access": AccessSection,
    "selection": SelectionSection,
    "payments": PaymentsSection,
    "chain": ChainSection,
    "orchestrator": OrchestratorSection,
    "worker": WorkerSection,
    "ai": AiSection,
    "http": HttpSection,
    "limits": LimitsSection,
    "node": NodeSection,
}
"""Every section by its name (its table in a configuration file)."""

ROLE_DEFAULTS: Mapping[str, Mapping[str, Any]] = {
    # dev runs the whole network in one process: its in-process worker is the only one, the
    # embedded chain's tickets need a price to pay, and a run keeps nothing by default.
    "dev": {"capacity": 4, "price_per_unit": 1, "data_dir": None},
    # An orchestrator's HTTP is an admin port (status, metrics), off unless asked for.
    "orchestrator": {"http_addr": None},
}
"""The defaults that differ by command, on purpose; every other default is its field's."""


@attrs.frozen(kw_only=True)
class Config:
    """A node's whole configuration, one section each."""

    ingest: IngestSection = attrs.Factory(IngestSection)
    playback: PlaybackSection = attrs.Factory(PlaybackSection)
    outputs: OutputsSection = attrs.Factory(OutputsSection)
    access: AccessSection = attrs.Factory(AccessSection)
    selection: SelectionSection = attrs.Factory(SelectionSection)
    payments: PaymentsSection = attrs.Factory(PaymentsSection)
    chain: ChainSection = attrs.Factory(ChainSection)
    orchestrator: OrchestratorSection = attrs.Factory(OrchestratorSection)
    worker: WorkerSection = attrs.Factory(WorkerSection)
    ai: AiSection = attrs.Factory(AiSection)
    http: HttpSection = attrs.Factory(HttpSection)
    limits: LimitsSection = attrs.Factory(LimitsSection)
    node: NodeSection = attrs.Factory(NodeSection)

    @classmethod
    def from_values(cls, values: Mapping[str, Any], *, role: str | None = None) -> Config:
        """The configuration from parsed values by field name (what the flags gave); a field
        not in ``values`` takes ``role``'s default, else its own."""
        chosen = {**ROLE_DEFAULTS.get(role or "", {}), **values}
        sections = {
            name: section(
                **{f.name: chosen[f.name] for f in attrs.fields(section) if f.name in chosen}
            )
            for name, section in SECTIONS.items()
        }
        return cls(**sections)

    def items(self) -> Iterator[tuple[str, attrs.Attribute[Any], Any]]:
        """Every setting as (section name, field, value), in the order of the sections."""
        for name in SECTIONS:
            section = getattr(self, name)
            for field in attrs.fields(type(section)):
                yield name, field, getattr(section, field.name)
