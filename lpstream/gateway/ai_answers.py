"""Go-livepeer's AI routes and OpenAI's chat API: the answers, rendered.

How this works
--------------
Sans-IO: no sockets, no clock, no trio. Once a job parsed by
:mod:`lpstream.gateway.ai_requests` is done, the HTTP layer (:mod:`lpstream.http.ai_jobs`)
renders what comes back (its outputs, each a :class:`Track`) with :func:`image_response`,
:func:`text_response`, :class:`ChatAnswer` (the LLM, in ai-worker's ``LLMResponse`` shape on
``/llm`` or OpenAI's ``chat.completion`` on ``/v1/chat/completions``, whole or as server-sent
events: :func:`sse_event` each, :data:`SSE_DONE` last) and :func:`models_list`; its errors
with :func:`livepeer_error` (go-livepeer's routes) or :func:`openai_error` (``/v1``).

A request without ``seed`` was given a random one when parsed, so the answer can report it:
image ``i`` was made with ``seed + i``.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from lpstream.gateway.ai_requests import AiRequestError

if TYPE_CHECKING:  # not at run time: it imports trio, and this module is sans-IO
    from lpstream.gateway.ai_jobs import ModelOffer

__all__ = [
    "SSE_DONE",
    "ChatAnswer",
    "TokenUsage",
    "Track",
    "image_response",
    "livepeer_error",
    "models_list",
    "openai_error",
    "sse_event",
    "text_response",
]

SSE_DONE = b"data: [DONE]\n\n"
"""The last event of a stream."""


@attrs.frozen(kw_only=True)
class Track:
    """One output of a finished job, as the answer renders it."""

    name: str
    data: bytes
    units: int = 0
    """Units billed for it (tokens for the LLM's ``prompt`` and ``completion``)."""


def image_response(tracks: Sequence[Track], seed: int) -> dict[str, Any]:
    """ai-worker's ``ImageResponse``: each ``image-i`` as a PNG data URL with ``seed + i``."""
    images = [t for t in tracks if t.name.startswith("image-")]
    images.sort(key=lambda t: int(t.name.removeprefix("image-") or 0))
    return {
        "images": [
            {
                "url": "data:image/png;base64," + base64.b64encode(t.data).decode("ascii"),
                "seed": seed + i,
                "nsfw": False,
            }
            for i, t in enumerate(images)
        ]
    }


def text_response(tracks: Sequence[Track]) -> dict[str, Any]:
    """ai-worker's ``TextResponse`` from the ``text`` output.

    Raises:
        AiRequestError: 502 when the output is not ``{"text": str, "chunks": [...]}``.
    """
    bad = AiRequestError("the orchestrator's transcript is malformed", code=502)
    found = next((t for t in tracks if t.name == "text"), None)
    try:
        value = json.loads(found.data) if found is not None else None
    except ValueError:
        raise bad from None
    if not isinstance(value, dict) or not isinstance(value.get("text"), str):
        raise bad
    chunks = value.get("chunks", [])
    if not isinstance(chunks, list) or not all(map(_is_chunk, chunks)):
        raise bad
    return {
        "text": value["text"],
        "chunks": [{"timestamp": c["timestamp"], "text": c["text"]} for c in chunks],
    }


def _is_chunk(chunk: object) -> bool:
    """``{"timestamp": [start, end], "text": str}`` (an end may be null: still speaking)."""
    if not isinstance(chunk, dict) or not isinstance(chunk.get("text"), str):
        return False
    stamp = chunk.get("timestamp")
    return isinstance(stamp, list) and all(
        x is None or (isinstance(x, int | float) and not isinstance(x, bool)) for x in stamp
    )


@attrs.frozen(kw_only=True)
class TokenUsage:
    """Tokens of one LLM answer."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_tracks(cls, tracks: Sequence[Track]) -> TokenUsage:
        units = {t.name: t.units for t in tracks}
        return cls(
            prompt_tokens=units.get("prompt", 0), completion_tokens=units.get("completion", 0)
        )

    def as_json(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@attrs.frozen(kw_only=True)
class ChatAnswer:
    """Renders one LLM answer: ai-worker's ``LLMResponse`` (``/llm``) or OpenAI's objects.

    On ``/llm`` the token counts are ``usage`` (ai-worker's field now) and again
    ``tokens_used`` (its earlier name) in the whole answer and the last chunk.
    """

    id: str
    """``chatcmpl-...``."""
    model: str
    created: int
    """Unix seconds."""
    openai: bool = False
    include_usage: bool = False

    def first_chunk(self) -> dict[str, Any] | None:
        """The opening event (OpenAI's role announcement); None on ``/llm``."""
        if not self.openai:
            return None
        return self._chunk({"role": "assistant", "content": ""}, None)

    def delta_chunk(self, text: str, sent: int) -> dict[str, Any]:
        """An event with the next piece of text; ``sent`` counts pieces so far, this one
        included (``/llm`` chunks report it as ``completion_tokens`` until the last)."""
        chunk = self._chunk({"content": text} if self.openai else _assistant(text), None)
        if not self.openai:
            chunk["usage"] = TokenUsage(completion_tokens=sent).as_json()
        return chunk

    def last_chunks(self, finish_reason: str, usage: TokenUsage) -> list[dict[str, Any]]:
        """The closing events: the finish reason, then (OpenAI, when asked) the usage."""
        if not self.openai:
            chunk = self._chunk(_assistant(""), finish_reason)
            chunk["usage"] = chunk["tokens_used"] = usage.as_json()
            return [chunk]
        chunks = [self._chunk({}, finish_reason)]
        if self.include_usage:
            chunks.append({**self._chunk({}, None), "choices": [], "usage": usage.as_json()})
        return chunks

    def whole(self, text: str, finish_reason: str, usage: TokenUsage) -> dict[str, Any]:
        """The answer in one object."""
        choice: dict[str, Any] = {"index": 0, "finish_reason": finish_reason}
        if self.openai:
            choice["message"] = {"role": "assistant", "content": text, "refusal": None}
            choice["logprobs"] = None
            return {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [choice],
                "usage": usage.as_json(),
                "system_fingerprint": None,
            }
        choice["message"] = _assistant(text)
        counts = usage.as_json()
        return {**self._head(), "choices": [choice], "usage": counts, "tokens_used": counts}

    def _head(self) -> dict[str, Any]:
        return {"id": self.id, "model": self.model, "created": self.created}

    def _chunk(self, delta: dict[str, Any], finish_reason: str | None) -> dict[str, Any]:
        if not self.openai:  # ai-worker: finish_reason "" until the last chunk
            choice = {"index": 0, "delta": delta, "finish_reason": finish_reason or ""}
            return {**self._head(), "choices": [choice]}
        choice = {"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}
        chunk = {**self._head(), "object": "chat.completion.chunk", "choices": [choice]}
        chunk["system_fingerprint"] = None
        if self.include_usage:
            chunk["usage"] = None
        return chunk


def _assistant(text: str) -> dict[str, str]:
    return {"role": "assistant", "content": text}


def sse_event(value: Mapping[str, Any]) -> bytes:
    """One server-sent event carrying ``value`` as JSON."""
    return b"data: " + json.dumps(value, separators=(",", ":")).encode() + b"\n\n"


def models_list(offers: Sequence[ModelOffer]) -> dict[str, Any]:
    """``GET /v1/models``: one entry per model id, with what it is offered for and at what
    price (extra fields OpenAI's clients keep)."""
    by_id: dict[str, list[ModelOffer]] = {}
    for offer in sorted(offers, key=lambda o: (o.model_id, o.capability)):
        by_id.setdefault(offer.model_id, []).append(offer)
    return {
        "object": "list",
        "data": [
            {
                "id": model_id,
                "object": "model",
                "created": 0,
                "owned_by": "livepeer",
                "capabilities": [o.capability for o in found],
                "offers": [
                    {
                        "capability": o.capability,
                        "price_per_unit": o.price_per_unit,
                        "pixels_per_unit": o.pixels_per_unit,
                        "warm": o.warm,
                        "orchestrators": o.orchestrators,
                    }
                    for o in found
                ],
            }
            for model_id, found in by_id.items()
        ],
    }


def livepeer_error(message: str) -> dict[str, Any]:
    """ai-worker's ``HTTPError`` body, as go-livepeer's AI API documents it."""
    return {"detail": {"msg": message}}


def openai_error(
    message: str, status: int, *, param: str | None = None, kind: str | None = None
) -> dict[str, Any]:
    """OpenAI's error body for ``status``."""
    if status == 401:
        error_type = "authentication_error"
    elif status == 404:
        error_type = "not_found_error"
    elif status < 500:
        error_type = "invalid_request_error"
    else:
        error_type = "server_error"
    return {"error": {"message": message, "type": error_type, "param": param, "code": kind}}
