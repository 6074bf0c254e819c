"""Go-livepeer's AI routes and OpenAI's chat API: the requests, parsed.

How this works
--------------
Sans-IO: no sockets, no clock, no trio. The HTTP layer (:mod:`lpstream.http.ai_jobs`) reads
a body within its route's limit (:data:`AI_ROUTES`, :data:`CHAT_COMPLETIONS`) and calls
:func:`parse_ai_request`, which gives the job's capability, asked model, parameters, input
bytes and whether to stream; :func:`choose_model` then names the model to run among those
offered. The answers are rendered by :mod:`lpstream.gateway.ai_answers`.

The routes take what go-livepeer's gateway takes (ai-worker's request models):

* ``/text-to-image`` and ``/llm``: JSON (a missing Content-Type is read as JSON);
* ``/image-to-image``, ``/upscale`` (file field ``image``) and ``/audio-to-text`` (``audio``):
  ``multipart/form-data`` only, as go-livepeer (it reads no base64 or data-URL pictures in
  JSON, so neither does this). Form values are text; each becomes the type its parameter
  declares (``BatchSpec.params``).

Fields: every field ai-worker defines is taken. ``safety_check`` (no safety checker runs:
``nsfw`` is always false) and ``metadata`` (job information for ai-worker's runner) are read
and ignored; ``loras`` is taken only empty (no LoRA loading). Go-livepeer ignores names it
does not know; here an unknown name is refused with 400 naming it, on every route, because a
misspelt parameter would otherwise be paid for and silently not applied. On ``/v1``, names
OpenAI defines that have no effect here are taken at their neutral value only (``n`` 1,
penalties 0, ``logprobs`` false, ``stop`` empty, ``user`` any), others answered 400 as OpenAI
answers an unknown argument. JSON ``null`` means "not given" everywhere; a parameter not
given takes the pipeline's default (ai-worker's: ``temperature`` 0.7, ``max_tokens`` 256,
on ``/v1`` too).

A request without ``seed`` gets a random one (within the pipeline's bounds) so the answer can
report it (:func:`lpstream.gateway.ai_answers.image_response`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.http.multipart import FormLimits, FormPart, parse_form, parse_header_params
from lpstream.json_depth import json_nesting
from lpstream.wire.fields import ParamValue
from workers.batch import BatchSpec
from workers.pipelines import BoolParam, FloatParam, IntParam

if TYPE_CHECKING:  # not at run time: it imports trio, and this module is sans-IO
    from lpstream.gateway.ai_jobs import ModelOffer

__all__ = [
    "AI_ROUTES",
    "CHAT_COMPLETIONS",
    "MAX_AUDIO_BYTES",
    "MAX_IMAGE_BYTES",
    "MAX_JSON_BODY",
    "MAX_JSON_DEPTH",
    "AiRequestError",
    "AiRoute",
    "ParsedAiRequest",
    "choose_model",
    "parse_ai_request",
]

MAX_JSON_BODY = 1024 * 1024
"""Largest JSON body (``/text-to-image``, ``/llm``, ``/v1/chat/completions``)."""
MAX_IMAGE_BYTES = 20 * 1024 * 1024
"""Largest picture file (``/image-to-image``, ``/upscale``)."""
MAX_AUDIO_BYTES = 50 * 1024 * 1024
"""Largest audio file (``/audio-to-text``; ai-worker's limit too)."""
FORM_ALLOWANCE = 256 * 1024
"""Bytes a form may hold besides its file: text fields, part headers, delimiters."""
MAX_FIELD_BYTES = 64 * 1024
"""Largest text field of a form."""
MAX_JSON_DEPTH = 16
"""Deepest nesting of arrays and objects in a JSON body (400 beyond)."""
SEED_RANGE = (0, 2**32 - 1)
"""Where a random seed is drawn from (ai-worker's), narrowed to the pipeline's bounds."""

_SAFETY = "safety_check"
_IMAGE_FIELDS = ("prompt", "negative_prompt", "guidance_scale", "num_inference_steps", "seed")


@attrs.frozen(kw_only=True)
class AiRoute:
    """One AI route: its path, capability, body form and fields."""

    path: str
    capability: str
    max_body: int
    """Largest request body in bytes (413 beyond)."""
    params: tuple[str, ...]
    """Request fields that are the pipeline's parameters, under the same names."""
    file_field: str = ""
    """The form's file field (its bytes are the input); empty: a JSON body."""
    ignored: tuple[str, ...] = ()
    """Fields read and ignored."""
    model_field: str = "model_id"
    openai: bool = False
    """OpenAI's chat completions (its fields and error shape)."""

    @property
    def form_limits(self) -> FormLimits:
        return FormLimits(
            max_total=self.max_body,
            max_field_bytes=MAX_FIELD_BYTES,
            max_file_bytes=self.max_body - FORM_ALLOWANCE,
        )


_LLM_PARAMS = ("temperature", "max_tokens", "top_p", "top_k", "seed")
AI_ROUTES = {
    r.path: r
    for r in (
        AiRoute(
            path="/text-to-image",
            capability="text-to-image",
            max_body=MAX_JSON_BODY,
            params=(*_IMAGE_FIELDS, "height", "width", "num_images_per_prompt"),
            ignored=(_SAFETY,),
        ),
        AiRoute(
            path="/image-to-image",
            capability="image-to-image",
            max_body=MAX_IMAGE_BYTES + FORM_ALLOWANCE,
            params=(*_IMAGE_FIELDS, "strength", "image_guidance_scale", "num_images_per_prompt"),
            file_field="image",
            ignored=(_SAFETY,),
        ),
        AiRoute(
            path="/upscale",
            capability="upscale",
            max_body=MAX_IMAGE_BYTES + FORM_ALLOWANCE,
            params=("prompt", "seed", "num_inference_steps"),
            file_field="image",
            ignored=(_SAFETY,),
        ),
        AiRoute(
            path="/audio-to-text",
            capability="audio-to-text",
            max_body=MAX_AUDIO_BYTES + FORM_ALLOWANCE,
            params=("return_timestamps",),
            file_field="audio",
            ignored=("metadata",),
        ),
        AiRoute(
            path="/llm",
            capability="llm",
            max_body=MAX_JSON_BODY,
            params=_LLM_PARAMS,
            model_field="model",
        ),
    )
}
"""Go-livepeer's AI routes by path."""
CHAT_COMPLETIONS = AiRoute(
    path="/v1/chat/completions",
    capability="llm",
    max_body=MAX_JSON_BODY,
    params=_LLM_PARAMS,
    model_field="model",
    openai=True,
)
"""OpenAI's chat completions."""
_OPENAI_NEUTRAL: dict[str, object] = {
    "n": 1,
    "frequency_penalty": 0,
    "presence_penalty": 0,
    "logprobs": False,
    "stop": [],
    "response_format": {"type": "text"},
    "store": False,
}
"""OpenAI's fields that change nothing here at these values (and only at these)."""
_OPENAI_IGNORED = ("user", "parallel_tool_calls")
_OPENAI_UNSUPPORTED = (
    "audio",
    "function_call",
    "functions",
    "logit_bias",
    "modalities",
    "prediction",
    "reasoning_effort",
    "service_tier",
    "tool_choice",
    "tools",
    "top_logprobs",
    "web_search_options",
)
"""OpenAI's fields that would change the answer in ways this API cannot (400)."""
_CHAT_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class AiRequestError(RemoteProtocolError):
    """A request that cannot be run as sent; ``code`` is the HTTP status.

    Attributes:
        param: the request field at fault, if one is (OpenAI's ``param``).
        kind: OpenAI's error ``code`` (``model_not_found``), if one fits.
    """

    def __init__(
        self, message: str, *, code: int = 400, param: str | None = None, kind: str | None = None
    ) -> None:
        super().__init__(message, code=code)
        self.param = param
        self.kind = kind


@attrs.frozen(kw_only=True)
class ParsedAiRequest:
    """What a request asks for, before its pipeline class checks it."""

    capability: str
    model_id: str
    """As asked: empty for the only model offered (:func:`choose_model`)."""
    params: Mapping[str, ParamValue]
    """The pipeline's parameters as sent, ``seed`` filled in where the pipeline has one."""
    input: bytes = b""
    """The picture, the audio, or the chat messages as JSON."""
    stream: bool = False
    """Answer as server-sent events (``/llm``, ``/v1/chat/completions``)."""
    include_usage: bool = False
    """OpenAI's ``stream_options.include_usage``: a last event with the token counts."""


def parse_ai_request(
    route: AiRoute,
    content_type: str | None,
    body: bytes,
    spec: BatchSpec,
    *,
    rng: random.Random | None = None,
) -> ParsedAiRequest:
    """Reads one request of ``route`` (see the module comment); ``spec`` is its pipeline's.

    Raises:
        AiRequestError: 415 a Content-Type the route does not take, 413 a form past its
            limits, 400 anything malformed, unknown or of the wrong type.
    """
    fields: dict[str, object]
    data = b""
    if route.file_field:
        fields, data = _read_form(route, content_type, body, spec)
    else:
        fields = _read_json(content_type, body)
    fields = {k: v for k, v in fields.items() if v is not None}
    model = fields.pop(route.model_field, "")
    if not isinstance(model, str):
        raise AiRequestError(f"{route.model_field} must be a string", param=route.model_field)
    stream = include_usage = False
    if route.capability == "llm":
        data = _chat_messages(fields.pop("messages", None), openai=route.openai)
        stream = _flag(fields.pop("stream", False), "stream")
        include_usage = _stream_options(fields.pop("stream_options", None), stream)
        if route.openai:
            _take_openai_extras(fields)
    for name in route.ignored:
        fields.pop(name, None)
    if fields.pop("loras", "") not in ("", "{}"):
        raise AiRequestError("loras are not supported: send it empty", param="loras")
    unknown = sorted(name for name in fields if name not in route.params)
    if unknown:
        raise AiRequestError(
            f"{route.path} does not take {', '.join(map(repr, unknown))}", param=unknown[0]
        )
    params = {name: _param_value(name, value) for name, value in fields.items()}
    _fill_seed(params, spec, rng or random.SystemRandom())
    return ParsedAiRequest(
        capability=route.capability,
        model_id=model,
        params=params,
        input=data,
        stream=stream,
        include_usage=include_usage,
    )


def _read_json(content_type: str | None, body: bytes) -> dict[str, object]:
    media_type, _ = parse_header_params(content_type or "application/json")
    if media_type != "application/json":
        raise AiRequestError(f"expected application/json, not {media_type}", code=415)
    if json_nesting(body) > MAX_JSON_DEPTH:
        raise AiRequestError(f"JSON nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise AiRequestError(f"the body is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise AiRequestError("the body must be a JSON object")
    return value


def _read_form(
    route: AiRoute, content_type: str | None, body: bytes, spec: BatchSpec
) -> tuple[dict[str, object], bytes]:
    """(text fields converted to their parameters' types, the file's bytes)."""
    try:
        parts = parse_form(content_type, body, route.form_limits)
    except RemoteProtocolError as exc:
        raise AiRequestError(str(exc), code=exc.code) from None
    declared = {p.name: p for p in spec.params}
    fields: dict[str, object] = {}
    data: bytes | None = None
    seen: set[str] = set()
    for part in parts:
        if part.name in seen:
            raise AiRequestError(f"field {part.name[:64]!r} is sent twice", param=part.name)
        seen.add(part.name)
        if part.name == route.file_field:
            data = part.data
        else:
            fields[part.name] = _form_value(part, declared.get(part.name))
    if not data:
        raise AiRequestError(
            f"{route.path} needs a file in the form field {route.file_field!r}",
            param=route.file_field,
        )
    return fields, data


def _form_value(part: FormPart, declared: object) -> object:
    """A form field's text as the type its parameter declares (JSON's types otherwise)."""
    try:
        text = part.data.decode("utf-8")
    except UnicodeDecodeError:
        raise AiRequestError(f"field {part.name!r} is not UTF-8 text", param=part.name) from None
    try:
        if isinstance(declared, BoolParam):
            return _bool_text(part.name, text)
        if isinstance(declared, IntParam):
            return int(text)
        if isinstance(declared, FloatParam):
            return float(text)
    except ValueError:
        kind = "a whole number" if isinstance(declared, IntParam) else "a number"
        raise AiRequestError(
            f"{part.name} must be {kind}, not {text[:32]!r}", param=part.name
        ) from None
    return text


def _bool_text(name: str, text: str) -> bool:
    lowered = text.strip().lower()
    if lowered in ("true", "1", "yes", "on") or (
        name == "return_timestamps" and lowered == "sentence"
    ):
        return True
    if lowered in ("false", "0", "no", "off"):
        return False
    raise AiRequestError(f"{name} must be true or false, not {text[:32]!r}", param=name)


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, bool):
        raise AiRequestError(f"{name} must be true or false", param=name)
    return value


def _stream_options(value: object, stream: bool) -> bool:
    if value is None:
        return False
    if not stream:
        raise AiRequestError(
            "stream_options is only allowed when stream is true", param="stream_options"
        )
    if not isinstance(value, dict) or set(value) - {"include_usage"}:
        raise AiRequestError("stream_options takes include_usage only", param="stream_options")
    return _flag(value.get("include_usage", False), "stream_options.include_usage")


def _take_openai_extras(fields: dict[str, object]) -> None:
    """Removes OpenAI's fields that change nothing; refuses those that would."""
    for name in _OPENAI_IGNORED:
        fields.pop(name, None)
    for name, neutral in _OPENAI_NEUTRAL.items():
        if name in fields and fields.pop(name) != neutral:
            raise AiRequestError(
                f"{name} is not supported here (only {json.dumps(neutral)})", param=name
            )
    for name in _OPENAI_UNSUPPORTED:
        if name in fields:
            raise AiRequestError(f"{name} is not supported here", param=name)
    if "max_completion_tokens" in fields:
        tokens = fields.pop("max_completion_tokens")
        if fields.setdefault("max_tokens", tokens) != tokens:
            raise AiRequestError(
                "max_tokens and max_completion_tokens differ", param="max_completion_tokens"
            )
    unknown = sorted(name for name in fields if name not in CHAT_COMPLETIONS.params)
    if unknown:
        raise AiRequestError(f"Unrecognized request argument supplied: {unknown[0]}", param=None)


def _chat_messages(value: object, *, openai: bool) -> bytes:
    """The messages as the llm pipeline reads them: a JSON list of {role, content}."""
    if not isinstance(value, list) or not value:
        raise AiRequestError("messages must be a non-empty list", param="messages")
    messages = []
    for i, message in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(message, dict):
            raise AiRequestError(f"{where} must be an object", param=where)
        role = message.get("role")
        if not isinstance(role, str) or role not in _CHAT_ROLES:
            raise AiRequestError(
                f"{where}.role must be system, user or assistant, not {role!r}", param=where
            )
        extra = sorted(k for k, v in message.items() if k not in ("role", "content", "name"))
        if any(message[k] is not None for k in extra):
            raise AiRequestError(f"{where}.{extra[0]} is not supported", param=where)
        messages.append({"role": _CHAT_ROLES[role], "content": _content(message, where, openai)})
    return json.dumps(messages, ensure_ascii=False).encode()


def _content(message: Mapping[str, object], where: str, openai: bool) -> str:
    content = message.get("content")
    if isinstance(content, str):
        return content
    if openai and isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise AiRequestError(f"{where}: only text content is supported", param=where)
            text = part.get("text")
            if not isinstance(text, str):
                raise AiRequestError(f"{where}: a text part needs its text", param=where)
            texts.append(text)
        return "\n".join(texts)
    raise AiRequestError(f"{where}.content must be a string", param=where)


def _param_value(name: str, value: object) -> ParamValue:
    if isinstance(value, str | int | float | bool):
        return value
    raise AiRequestError(f"{name} must be a string, number or boolean", param=name)


def _fill_seed(params: dict[str, ParamValue], spec: BatchSpec, rng: random.Random) -> None:
    declared = next((p for p in spec.params if p.name == "seed"), None)
    if not isinstance(declared, IntParam) or "seed" in params:
        return
    low = max(SEED_RANGE[0], declared.minimum if declared.minimum is not None else SEED_RANGE[0])
    high = min(SEED_RANGE[1], declared.maximum if declared.maximum is not None else SEED_RANGE[1])
    params["seed"] = rng.randint(low, high)


def choose_model(capability: str, model_id: str, offers: Sequence[ModelOffer]) -> str:
    """The model to run: ``model_id``, or the only one offered for ``capability``.

    Raises:
        AiRequestError: 503 none is offered for the capability; 400 ``model_id`` is not
            offered, or empty while several are (naming those offered).
    """
    offered = sorted({o.model_id for o in offers if o.capability == capability})
    if not offered:
        raise AiRequestError(f"no orchestrator offers {capability} now", code=503)
    names = ", ".join(offered)
    if not model_id:
        if len(offered) > 1:
            raise AiRequestError(
                f"several models are offered for {capability}: name one ({names})",
                param="model",
            )
        return offered[0]
    if model_id not in offered:
        raise AiRequestError(
            f"model {model_id[:128]!r} is not offered for {capability}; offered: {names}",
            param="model",
            kind="model_not_found",
        )
    return model_id
