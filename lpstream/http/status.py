"""/api/status: the node's status values, and the one place they become JSON.

Each role reports frozen attrs values (``lpstream.gateway.status``,
``lpstream.orchestrator.status``, ``lpstream.paid.PaymentsStatus``, the servers'
``statistics()``); a node composes them into a ``GatewayNodeStatus`` or an
``OrchestratorNodeStatus`` and ``status_json`` renders that:

- an attrs value is an object of its fields, in order; a field marked ``INLINE`` merges its keys
  into its parent's, one marked ``OMIT_NONE`` is left out while None (``lpstream.status_fields``);
- money (``payments.pm.Wei``) is ``{"wei": "<whole wei>", "eth": <float>}``: whole wei rounded
  down, as a string since amounts pass 2^53, and ETH rounded to the gwei for people;
- a price (``payments.pm.PixelPrice``) is ``{"wei": "<n>", "pixels": <d>, "wei_per_pixel":
  <float>}``: exactly n wei per d pixels, and a float for people;
- mappings are objects (string keys), tuples and lists arrays, str/int/float/bool/None as is.

Anything else is a ``TypeError``: an exact rational (``Fraction``) never leaves the ledger, so a
fraction string such as "4631/2315" cannot reach a dashboard.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lpstream.status_fields import INLINE, OMIT_NONE, is_inline, omits_none
from payments.pm import PixelPrice, Wei

if TYPE_CHECKING:  # annotations only: rendering needs none of these modules
    from ingest.rtmp import RtmpServerStatistics
    from ingest.srt import SrtServerStatistics
    from ingest.whip import WhepStatistics, WhipStatistics
    from lpstream.gateway.status import GatewayStatus, OrchestratorFacts
    from lpstream.http.server import HttpServerStatistics
    from lpstream.orchestrator.status import OrchestratorStatus
    from lpstream.paid import PaymentsStatus

__all__ = ["GatewayNodeStatus", "NodeStatus", "OrchestratorNodeStatus", "status_json"]


@attrs.frozen(kw_only=True)
class GatewayNodeStatus:
    """/api/status of a gateway (``role`` "gateway") or of ``lpstream dev`` ("dev")."""

    role: str
    """``gateway`` or ``dev``."""
    version: str
    """lpstream's version."""
    gateway: GatewayStatus = attrs.field(metadata=INLINE)
    """Streams and memory, at the top level."""
    orchestrators: Sequence[OrchestratorFacts]
    """The orchestrator pool."""
    rtmp: RtmpServerStatistics
    """The RTMP ingest server."""
    whip: WhipStatistics
    """WHIP ingest."""
    whep: WhepStatistics
    """WHEP playback."""
    http: HttpServerStatistics
    """The HTTP server."""
    orchestrator: OrchestratorStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """The in-process orchestrator (``dev``)."""
    payments: PaymentsStatus | None = attrs.field(default=None, metadata=OMIT_NONE)
    """Payments, when paid."""
    srt: SrtServerStatistics | None = attrs.field(default=None, metadata=OMIT_NONE)
    """SRT ingest, where ``--srt-addr`` turned it on."""


@attrs.frozen(kw_only=True)
class OrchestratorNodeStatus:
    """/api/status of an orchestrator's admin HTTP."""

    role: str
    """``orchestrator``."""
    version: str
    """lpstream's version."""
    orchestrator: OrchestratorStatus = attrs.field(metadata=INLINE)
    """Workers, capacity, sessions, uploads, live sessions, payments, at the top level."""


NodeStatus = GatewayNodeStatus | OrchestratorNodeStatus


def status_json(value: object) -> Any:
    """``value`` as JSON-able data, by the rules above."""
    if value is None or isinstance(value, str | bool | int | float):
        return value
    if isinstance(value, Wei):
        return {"wei": str(value.whole), "eth": value.eth}
    if isinstance(value, PixelPrice):
        return {
            "wei": str(value.wei),
            "pixels": value.pixels,
            "wei_per_pixel": float(value.per_pixel),
        }
    cls = type(value)
    if attrs.has(cls):
        out: dict[str, Any] = {}
        for field in attrs.fields(cls):
            item = getattr(value, field.name)
            if is_inline(field):
                out.update({} if item is None else status_json(item))
            elif item is not None or not omits_none(field):
                out[field.name] = status_json(item)
        return out
    if isinstance(value, Mapping):
        return {str(k): status_json(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [status_json(v) for v in value]
    raise TypeError(f"/api/status cannot show a {type(value).__name__}: {value!r}")
