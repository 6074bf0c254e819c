"""``llm``: chat completion with a transformers causal language model, streamed token by token.

How this works
--------------
The input is the conversation as UTF-8 JSON, ``[{"role": "system"|"user"|"assistant",
"content": "..."}]`` (:func:`parse_messages`: nothing else is taken). ``load`` reads a local
model directory (``AutoModelForCausalLM`` + ``AutoTokenizer``, ``local_files_only``). ``run``
renders the conversation with the tokenizer's chat template (``add_generation_prompt``); a
tokenizer without one gets :data:`FALLBACK_FORMAT`. The prompt's tokens plus ``max_tokens``
must fit the model's context (``max_position_embeddings`` / ``n_positions``), else the request
fails with a :class:`BadRequestError` naming both numbers.

Generation is transformers' own ``generate``; a streamer it calls after every step hands each
new token to :class:`TextDeltas`, which sends the text that token completes to the sink at
once, one ``data`` call per token that completes text (a token ending inside a UTF-8
character sends nothing until one completes it). Sampling draws from torch's default
generator, seeded with ``seed`` just before ``generate``: the same seed gives the same tokens
as ``torch.manual_seed(seed)`` followed by the same ``model.generate`` call. ``temperature`` 0
is greedy decoding. Generation stops at an end-of-sequence token (``finish`` = ``stop``) or
after ``max_tokens`` tokens (``length``).

Billing is in tokens: ``completion`` = every token generated (an end-of-sequence token too:
it cost a step), ``prompt`` = the prompt's tokens after the template. :meth:`LlmPipeline.quote`
has no tokenizer (the gateway has none), so it bounds the prompt instead (:func:`prompt_bound`):
a byte-level BPE or byte-fallback tokenizer makes at most one token per UTF-8 byte of text,
and the template's own text is allowed :data:`TOKENS_PER_MESSAGE` tokens per message plus
:data:`TOKENS_PER_PROMPT`. ``run`` checks, before generating, that the prompt's tokens plus
``max_tokens`` are within that quote, so a request is never billed more than was quoted.

Requests are not batched (``max_batch`` 1): sampling draws from one seeded generator per
``generate`` call, and prompts of different lengths would need padding, so a batched request
would not give the tokens the same seed gives alone.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import attrs

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchPipeline,
    BatchRequest,
    BatchSink,
    BatchSpec,
    BatchUnit,
    BatchUsage,
    params_of,
)
from workers.pipelines.offline import TransformersModel, load_transformers
from workers.pipelines.params import FloatParam, IntParam, PipelineError

__all__ = [
    "CAPABILITY",
    "FALLBACK_FORMAT",
    "MAX_INPUT_BYTES",
    "MAX_MESSAGES",
    "OUTPUTS",
    "ROLES",
    "TOKENS_PER_MESSAGE",
    "TOKENS_PER_PROMPT",
    "ChatMessage",
    "LlmPipeline",
    "TextDeltas",
    "parse_messages",
    "prompt_bound",
    "render_fallback",
]

CAPABILITY = "llm"
"""The capability served."""

MAX_INPUT_BYTES = 1024 * 1024
"""Largest conversation taken, in bytes of JSON (413 beyond)."""

MAX_MESSAGES = 256
"""Most messages in one conversation."""

ROLES = ("system", "user", "assistant")
"""The roles a message may have."""

TOKENS_PER_MESSAGE = 16
"""Tokens allowed for a chat template's text around each message (role markers, separators)."""

TOKENS_PER_PROMPT = 64
"""Tokens allowed for a chat template's text around the whole conversation (a start token, a
default system line, the generation prompt)."""

FALLBACK_FORMAT = "{role}: {content}\n"
"""How each message is written for a tokenizer without a chat template; the prompt then ends
with ``assistant:``, and the tokenizer adds its own special tokens (a start token)."""

_FALLBACK_END = "assistant:"

_MAX_TOKENS = 4096
"""Largest ``max_tokens`` taken."""


@attrs.frozen(kw_only=True)
class ChatMessage:
    """One message of a conversation."""

    role: str
    """``system``, ``user`` or ``assistant``."""
    content: str
    """What it says."""


def parse_messages(data: bytes) -> tuple[ChatMessage, ...]:
    """The conversation in ``data``: a UTF-8 JSON list of ``{"role", "content"}`` objects.

    Raises:
        BadRequestError: not UTF-8 JSON, not a non-empty list of at most
            :data:`MAX_MESSAGES` objects, an unknown role, a content that is not a string, a
            missing or unknown key.
    """
    try:
        value = json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"llm: the messages are not UTF-8 text: {exc}") from None
    except json.JSONDecodeError as exc:
        raise BadRequestError(f"llm: the messages are not JSON: {exc}") from None
    if not isinstance(value, list):
        raise BadRequestError(
            f"llm: the messages must be a JSON list of objects, not {type(value).__name__}"
        )
    if not value:
        raise BadRequestError("llm: the conversation has no messages")
    if len(value) > MAX_MESSAGES:
        raise BadRequestError(
            f"llm: the conversation has {len(value)} messages, the limit is {MAX_MESSAGES}"
        )
    return tuple(_message(i, item) for i, item in enumerate(value))


def _message(index: int, item: object) -> ChatMessage:
    where = f"llm: message {index}"
    if not isinstance(item, dict):
        raise BadRequestError(f"{where} must be an object, not {type(item).__name__}")
    missing = [key for key in ("role", "content") if key not in item]
    if missing:
        raise BadRequestError(f"{where} has no {' or '.join(missing)}")
    unknown = sorted(str(key) for key in item if key not in ("role", "content"))
    if unknown:
        raise BadRequestError(f"{where} has unknown keys: {', '.join(unknown)}")
    role, content = item["role"], item["content"]
    if role not in ROLES:
        raise BadRequestError(f"{where} has role {role!r}; roles are {', '.join(ROLES)}")
    if not isinstance(content, str):
        raise BadRequestError(f"{where}: content must be a string, not {type(content).__name__}")
    return ChatMessage(role=role, content=content)


def prompt_bound(messages: Sequence[ChatMessage]) -> int:
    """The most tokens ``messages`` can make once rendered (see the module comment)."""
    text = sum(len(m.role) + len(m.content.encode("utf-8")) for m in messages)
    return text + TOKENS_PER_MESSAGE * len(messages) + TOKENS_PER_PROMPT


def render_fallback(messages: Sequence[ChatMessage]) -> str:
    """The prompt for a tokenizer without a chat template (:data:`FALLBACK_FORMAT`)."""
    body = "".join(FALLBACK_FORMAT.format(role=m.role, content=m.content) for m in messages)
    return body + _FALLBACK_END


@attrs.define
class TextDeltas:
    """Generated token ids in, the text each one completes out.

    Each call decodes all ids so far (``decode``) and gives what is new since the last text
    given; while the decoded text ends in U+FFFD (a token that ends inside a UTF-8 character)
    nothing is given. The pieces join to ``decode`` of every id, for a tokenizer whose decoding
    of a sequence starts with its decoding of any prefix that does not end in U+FFFD (byte-level
    BPE, SentencePiece; decode without clean-up of spaces).
    """

    _decode: Callable[[list[int]], str]
    _ids: list[int] = attrs.Factory(list)
    _sent: int = 0

    def push(self, token: int) -> str:
        """The text ``token`` completes ("" if none yet)."""
        self._ids.append(token)
        text = self._decode(self._ids)
        if text.endswith("\ufffd"):
            return ""
        return self._take(text)

    def finish(self) -> str:
        """What is still held back (an unfinished character, as U+FFFD)."""
        return self._take(self._decode(self._ids))

    def _take(self, text: str) -> str:
        delta = text[self._sent :]
        self._sent = len(text)
        return delta


@attrs.define
class _SinkStreamer:
    """What ``generate`` calls with each step's tokens (transformers' streamer protocol):
    the first call is the prompt, every later one a new token."""

    _deltas: TextDeltas
    _sink: BatchSink
    tokens: list[int] = attrs.Factory(list)
    _prompt_seen: bool = False

    def put(self, value: Any) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        for token in value.reshape(-1).tolist():
            self.tokens.append(int(token))
            delta = self._deltas.push(int(token))
            if delta:
                self._sink.data(0, delta.encode("utf-8"))

    def end(self) -> None:
        pass


OUTPUTS = (
    BatchOutput(name="completion", content_type="text/plain; charset=utf-8"),
    BatchOutput(name="prompt", content_type="text/plain; charset=utf-8"),
    BatchOutput(name="finish", content_type="text/plain; charset=utf-8"),
)
"""The tracks of every request: the text, the prompt (billed, no bytes), how it ended."""


class LlmPipeline(BatchPipeline):
    """Chat completion, one request at a time (see the module comment)."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability=CAPABILITY,
        description="Answers a chat conversation with a causal language model, token by token.",
        unit=BatchUnit.TOKEN,
        params=(
            IntParam(
                name="max_tokens",
                default=256,
                minimum=1,
                maximum=_MAX_TOKENS,
                description="most tokens to generate",
            ),
            FloatParam(
                name="temperature",
                default=0.7,
                minimum=0.0,
                maximum=2.0,
                description="sampling temperature; 0 is greedy decoding",
            ),
            FloatParam(
                name="top_p",
                default=1.0,
                minimum=0.0,
                maximum=1.0,
                description="nucleus sampling: keep the likeliest tokens up to this mass",
            ),
            IntParam(
                name="top_k",
                default=-1,
                minimum=-1,
                description="keep the k likeliest tokens; -1 (or 0) keeps all",
            ),
            IntParam(
                name="seed",
                default=0,
                minimum=0,
                maximum=2**63 - 1,
                description="the sampling seed: the same seed gives the same tokens",
            ),
        ),
        max_batch=1,
        max_input=MAX_INPUT_BYTES,
    )

    def __init__(self) -> None:
        self._lm: TransformersModel | None = None
        self._context: int | None = None
        self._eos: frozenset[int] = frozenset()

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        parse_messages(request.input)

    @classmethod
    def quote(cls, request: BatchRequest) -> int:
        max_tokens = params_of(request).get_int("max_tokens")
        return prompt_bound(parse_messages(request.input)) + max_tokens

    def load(self, path: str, device: str) -> None:
        lm = load_transformers(
            path, device, "AutoTokenizer", "AutoModelForCausalLM", CAPABILITY, bfloat16=True
        )
        model, tokenizer = lm.model, lm.preprocessor
        config = model.config
        context = getattr(config, "max_position_embeddings", None) or getattr(
            config, "n_positions", None
        )
        self._context = int(context) if context else None
        eos = model.generation_config.eos_token_id
        if eos is None:
            eos = tokenizer.eos_token_id
        self._eos = frozenset([eos] if isinstance(eos, int) else (eos or ()))
        self._lm = lm

    def prompt_ids(self, messages: Sequence[ChatMessage]) -> list[int]:
        """The prompt's tokens: the chat template (or :func:`render_fallback`) tokenized.

        Raises:
            PipelineError: no model is loaded.
        """
        tokenizer = self._loaded().preprocessor
        if tokenizer.chat_template:
            text = tokenizer.apply_chat_template(
                [{"role": m.role, "content": m.content} for m in messages],
                add_generation_prompt=True,
                tokenize=False,
            )
            ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        else:
            ids = tokenizer(render_fallback(messages))["input_ids"]
        return [int(i) for i in ids]

    def run(self, request: BatchRequest, sink: BatchSink) -> BatchUsage:
        lm = self._loaded()
        import torch

        params = params_of(request)
        max_tokens = params.get_int("max_tokens")
        prompt = self.prompt_ids(parse_messages(request.input))
        needed = len(prompt) + max_tokens
        if self._context is not None and needed > self._context:
            raise BadRequestError(
                f"llm: the prompt is {len(prompt)} tokens and max_tokens is {max_tokens}: "
                f"{needed} tokens, past the model's context of {self._context}"
            )
        quoted = self.quote(request)
        if needed > quoted:
            raise BadRequestError(
                f"llm: the prompt is {len(prompt)} tokens, more than the {quoted - max_tokens} "
                "the quote allows for it (the chat template adds more than "
                f"{TOKENS_PER_MESSAGE} tokens per message and {TOKENS_PER_PROMPT} in all)"
            )
        tokenizer = lm.preprocessor
        deltas = TextDeltas(
            lambda ids: tokenizer.decode(
                ids, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
        )
        streamer = _SinkStreamer(deltas, sink)
        sink.start(OUTPUTS)
        ids = torch.tensor([prompt], dtype=torch.long, device=lm.device)
        try:
            with torch.inference_mode():
                torch.manual_seed(params.get_int("seed"))
                lm.model.generate(
                    ids,
                    attention_mask=torch.ones_like(ids),
                    generation_config=self._generation_config(lm.model, request),
                    streamer=streamer,
                )
        except Exception as exc:  # the model failing in any of torch's or transformers' layers
            raise PipelineError(f"llm: generation failed: {exc}") from exc
        rest = deltas.finish()
        if rest:
            sink.data(0, rest.encode("utf-8"))
        tokens = streamer.tokens
        stopped = bool(tokens) and tokens[-1] in self._eos
        sink.data(2, b"stop" if stopped else b"length")
        return BatchUsage(units=(len(tokens), len(prompt), 0))

    def _generation_config(self, model: Any, request: BatchRequest) -> Any:
        """``model``'s generation config with this request's settings: what
        ``model.generate(ids, **settings)`` would use."""
        params = params_of(request)
        config = copy.deepcopy(model.generation_config)
        temperature = params.get_float("temperature")
        settings: dict[str, object] = {"max_new_tokens": params.get_int("max_tokens")}
        if temperature == 0.0:
            settings["do_sample"] = False
        else:
            top_k = params.get_int("top_k")
            settings.update(
                do_sample=True,
                temperature=temperature,
                top_p=params.get_float("top_p"),
                top_k=max(top_k, 0),
            )
        if config.pad_token_id is None and self._eos:
            settings["pad_token_id"] = min(self._eos)
        config.update(**settings)
        return config

    def _loaded(self) -> TransformersModel:
        if self._lm is None:
            raise PipelineError("llm: no model loaded")
        return self._lm

    def unload(self) -> None:
        self._lm = None
