"""The messages of a live AI session's control stream: open, steer, pay, hear back.

Their encoding is :mod:`lpstream.wire.messages`'.
"""

from __future__ import annotations

from typing import Annotated

import attrs
import msgspec

from lpstream.wire.fields import (
    MAX_PARAMS,
    MAX_PAYMENT_SIZE,
    Count,
    ErrorMessage,
    Int64,
    Name,
    ParamKey,
    Params,
    ParamValue,
)

__all__ = ["LiveEvent", "LiveOpen", "LivePayment", "LiveUpdate", "LiveUpdated"]


@attrs.frozen(kw_only=True)
class LiveOpen:
    """LIVE_OPEN: first message of a live AI session's control stream."""

    stream_id: Name
    """The stream, as in the session's JOBs."""
    session_id: Name
    """The session, as in its JOBs: the orchestrator bills and routes by it."""
    pipeline: Name
    """The pipeline the session runs (its price applies)."""


@attrs.frozen(kw_only=True)
class LiveUpdate:
    """LIVE_UPDATE: new values for some of a running pipeline's parameters."""

    stream_id: Name
    session_id: Name
    params: Params = attrs.field(factory=dict)
    """The parameters to change; the others keep their values."""


@attrs.frozen(kw_only=True)
class LiveUpdated:
    """LIVE_UPDATED: a LIVE_UPDATE was accepted (a refusal is an ERROR)."""

    version: Count
    """How many changes the session has accepted, this one included."""
    after_pts: Int64 = -1
    """Timestamp of the last frame finished before the change arrived (-1: none yet)."""
    applied_pts: Int64 = -1
    """Timestamp of the first frame processed with it (-1: no frame came within the wait)."""
    frames_between: Count = 0
    """Frames finished after its arrival and before it applied (at most the one in
    flight)."""


@attrs.frozen(kw_only=True)
class LivePayment:
    """LIVE_PAYMENT: tickets for a live session's time."""

    payment: Annotated[bytes, msgspec.Meta(min_length=1, max_length=MAX_PAYMENT_SIZE)]
    """A ``payments.pm.Payment``, as in a JOB."""


@attrs.frozen(kw_only=True)
class LiveEvent:
    """LIVE_EVENT: something the app steering a live session wants to know."""

    kind: Name
    """``billed`` (seconds and wei so far), ``stopped`` (the session ends; ``message`` says
    why), ``paid`` (a payment was credited), ``settled`` (final figures at the end)."""
    message: ErrorMessage = ""
    values: Annotated[dict[ParamKey, ParamValue], msgspec.Meta(max_length=MAX_PARAMS)] = (
        attrs.field(factory=dict)
    )
    """Figures, e.g. ``seconds``, ``billed_wei``, ``balance_wei`` (wei as decimal strings:
    exact Fractions do not fit an int64)."""
