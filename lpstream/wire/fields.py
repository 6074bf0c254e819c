"""The field types of wire messages: every limit a peer's header must keep, in one place.

msgspec checks these while it decodes, so a message that breaks one never becomes a value.
"""

from __future__ import annotations

from typing import Annotated

import msgspec

from lpstream.media import MAX_STREAM_NAME, STREAM_NAME_PATTERN

__all__ = [
    "MAX_CAPABILITIES",
    "MAX_ERROR_MESSAGE",
    "MAX_INT64",
    "MAX_MODEL_ID",
    "MAX_NAME",
    "MAX_PARAMS",
    "MAX_PARAM_VALUE",
    "MAX_PAYMENT_SIZE",
    "MAX_PROFILES",
    "MAX_RENDITIONS",
    "MAX_TICKET_PARAMS_SIZE",
    "SIGNATURE_SIZE",
    "Address",
    "Capabilities",
    "Count",
    "ErrorMessage",
    "Int64",
    "ModelId",
    "Name",
    "OptionalName",
    "ParamKey",
    "ParamValue",
    "Params",
    "Text",
]

MAX_NAME = MAX_STREAM_NAME
"""Longest identifier: stream, session, pipeline, rendition and capability names, versions."""
MAX_PROFILES = 16
"""Most profiles in one JOB (as in :func:`lpstream.media.parse_profiles`)."""
MAX_RENDITIONS = 32
"""Most renditions in one RESULT (the profiles, a passthrough, AI outputs)."""
MAX_MODEL_ID = 128
"""Longest AI model id (``org/name`` as on model hubs)."""
MAX_PARAMS = 32
"""Most entries in ``Job.params``."""
MAX_PARAM_VALUE = 1024
"""Longest string value in ``Job.params``."""
MAX_PAYMENT_SIZE = 48 * 1024
"""Largest ``Job.payment``; below :data:`MAX_HEADER_SIZE` so a whole JOB still fits."""
MAX_TICKET_PARAMS_SIZE = 16 * 1024
"""Largest ``OrchInfo.ticket_params``."""
MAX_CAPABILITIES = 64
"""Most entries in a capability list."""
MAX_ERROR_MESSAGE = 1024
"""Longest ``Error.message``."""
SIGNATURE_SIZE = 65
"""Length of an Ethereum signature ``r || s || v``: ``ResultSummary.signature`` is this or empty."""

MAX_INT64 = (1 << 63) - 1
"""Largest integer a header field holds (msgpack's and SQLite's signed 64 bits)."""

# Field types with the limits msgspec enforces while decoding. `\Z`, not `$`: msgspec uses
# re.search, and `$` would let a trailing newline through.
Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_INT64)]
Int64 = Annotated[int, msgspec.Meta(ge=-MAX_INT64, le=MAX_INT64)]
# Names (stream, rendition, session, pipeline, worker) follow the one stream-name rule of
# lpstream.media: its pattern and length, so the wire never takes a name that RTMP, WHIP or
# HTTP would refuse.
Name = Annotated[str, msgspec.Meta(pattern=STREAM_NAME_PATTERN, max_length=MAX_STREAM_NAME)]
Address = Annotated[str, msgspec.Meta(pattern=r"^(0x[0-9a-fA-F]{40})?\Z")]
OptionalName = Annotated[
    str, msgspec.Meta(pattern=rf"^\Z|{STREAM_NAME_PATTERN}", max_length=MAX_STREAM_NAME)
]
Text = Annotated[str, msgspec.Meta(max_length=MAX_NAME)]
ParamKey = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_NAME)]
ParamValue = Annotated[str, msgspec.Meta(max_length=MAX_PARAM_VALUE)] | int | float | bool
Capabilities = Annotated[tuple[Text, ...], msgspec.Meta(max_length=MAX_CAPABILITIES)]
Params = Annotated[dict[ParamKey, ParamValue], msgspec.Meta(max_length=MAX_PARAMS)]
ErrorMessage = Annotated[str, msgspec.Meta(max_length=MAX_ERROR_MESSAGE)]
# An AI model id: printable ASCII without spaces (``/`` allowed: ``org/name``), or empty.
ModelId = Annotated[str, msgspec.Meta(pattern=r"^[!-~]*\Z", max_length=MAX_MODEL_ID)]
