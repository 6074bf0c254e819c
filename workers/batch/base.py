"""The batch pipeline interface: one request in, its outputs streamed out, billed by units.

How this works
--------------
A batch pipeline serves one AI capability (``text-to-image``, ``llm``...) for one model at a
time. Its class declares a :class:`BatchSpec`: the capability, the parameters it takes (the
same ``ParamSpec`` values live pipelines declare, so one validation rule serves both), the
unit it is billed in and how many requests one call may run together. Its life, on one thread
of one process (a pipeline child, ``workers.batch.runner``):

* ``load(path, device)``: loads the model from a local path (never a download:
  ``local_files_only``); blocking, once.
* ``run_batch(requests, sinks)``: runs requests that ``batch_key`` put together (one, or up
  to ``spec.max_batch``); each request's outputs go to its own :class:`BatchSink` as they are
  produced: ``start`` names the outputs, then ``data(track, bytes)`` as many times as needed
  (an LLM sends each token's text as it is generated). It returns, per request, the
  :class:`BatchUsage` (units per output track: what the orchestrator bills) or the error
  that request failed with; one request's bad input fails that request only.
* ``unload()``: frees the model.

``quote`` and ``check_request`` are classmethods that need no model and no torch, so a
gateway can refuse a bad request (400/413) and price a good one before anything is sent:
``quote`` is the most units the request can be billed, which the gateway pays ahead.

Inputs are bytes: the picture (PNG, JPEG, WebP...) for image capabilities, the audio file for
``audio-to-text``, the chat messages as JSON for ``llm``; small parameters travel in
``BatchRequest.params``.
"""

from __future__ import annotations

import abc
import enum
from collections.abc import Hashable, Mapping, Sequence
from typing import ClassVar, Protocol

import attrs

from workers.pipelines.params import Params, ParamSpec, PipelineError, validate

__all__ = [
    "BadRequestError",
    "BatchOutput",
    "BatchPipeline",
    "BatchRequest",
    "BatchSink",
    "BatchSpec",
    "BatchUnit",
    "BatchUsage",
    "RequestTooLargeError",
]


class BadRequestError(PipelineError, ValueError):
    """The request cannot be run as asked (answered 400 with this message): a malformed
    input, a prompt past the model's context, a picture that is not one."""

    code = 400


class RequestTooLargeError(BadRequestError):
    """An input past a stated limit (answered 413 with this message)."""

    code = 413


class BatchUnit(enum.Enum):
    """What a capability is billed by."""

    PIXEL = "pixel"
    """Output pixels: width x height of every picture produced."""
    MILLISECOND = "millisecond"
    """Milliseconds of input audio (go-livepeer's count for audio-to-text)."""
    TOKEN = "token"
    """Tokens: those of the prompt as the model reads it, and those generated."""


@attrs.frozen(kw_only=True)
class BatchSpec:
    """What a batch pipeline is: advertised with its models, checked before each request."""

    capability: str
    """The capability it serves, as the gateway's route names it (``text-to-image``)."""
    description: str
    """One line for people."""
    unit: BatchUnit
    """What it is billed by."""
    params: tuple[ParamSpec, ...] = ()
    """Declared parameters, with defaults and bounds; nothing else is accepted."""
    max_batch: int = attrs.field(default=1, validator=attrs.validators.ge(1))
    """Most requests one ``run_batch`` call takes (1: never batched)."""
    max_input: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    """Largest input in bytes (413 beyond); 0 when the capability takes no input bytes."""


@attrs.frozen(kw_only=True)
class BatchRequest:
    """One request, as it reaches a pipeline."""

    params: Mapping[str, object] = attrs.Factory(dict)
    """Its parameters (validated against ``spec.params`` by :meth:`BatchPipeline.checked`)."""
    input: bytes = b""
    """Its input bytes (see the module comment)."""


@attrs.frozen(kw_only=True)
class BatchOutput:
    """One output track, named before its bytes come."""

    name: str
    """``image-0``, ``text``, ``completion``, ``prompt``..."""
    width: int = 0
    """Picture width in pixels (0 for text)."""
    height: int = 0
    """Picture height in pixels (0 for text)."""
    content_type: str = "application/octet-stream"
    """What its bytes are: ``image/png``, ``application/json``, ``text/plain``."""


@attrs.frozen(kw_only=True)
class BatchUsage:
    """What one request produced, as billed."""

    units: tuple[int, ...]
    """Units per output track, in track order (``spec.unit``)."""

    @property
    def total(self) -> int:
        return sum(self.units)


class BatchSink(Protocol):
    """Where one request's outputs go, as they are produced."""

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        """Names the outputs; called once, before any ``data``."""

    def data(self, track: int, payload: bytes) -> None:
        """A piece of output ``track``; may be called any number of times."""


class BatchPipeline(abc.ABC):
    """Base of every batch pipeline (see the module comment)."""

    spec: ClassVar[BatchSpec]

    @classmethod
    def checked(cls, request: BatchRequest) -> BatchRequest:
        """``request`` with its parameters validated and defaults filled in.

        Raises:
            InvalidParamsError: (400) unknown names, values out of bounds.
            RequestTooLargeError: the input is past ``spec.max_input``.
            BadRequestError: the input is missing or cannot be read.
        """
        params = validate(cls.spec.capability, cls.spec.params, request.params)
        if cls.spec.max_input and len(request.input) > cls.spec.max_input:
            raise RequestTooLargeError(
                f"{cls.spec.capability}: the input is {len(request.input)} bytes, "
                f"the limit is {cls.spec.max_input}"
            )
        checked = BatchRequest(params=params, input=request.input)
        cls.check_request(checked)
        return checked

    @classmethod  # noqa: B027 (an optional hook)
    def check_request(cls, request: BatchRequest) -> None:
        """Checks what ``checked`` cannot from the declaration alone (the input's form),
        without a model; ``request.params`` are validated already.

        Raises:
            BadRequestError, RequestTooLargeError: as ``checked``.
        """

    @classmethod
    @abc.abstractmethod
    def quote(cls, request: BatchRequest) -> int:
        """The most units ``request`` (checked) can be billed: what a gateway pays ahead.

        Raises:
            BadRequestError: the input cannot be read (the quote needs its size).
        """

    def batch_key(self, request: BatchRequest) -> Hashable | None:
        """Requests with equal keys may run in one ``run_batch`` call; None: alone."""
        return None

    @abc.abstractmethod
    def load(self, path: str, device: str) -> None:
        """Loads the model at local ``path`` onto ``device`` (``cpu``, ``cuda:N``); blocking.

        Raises:
            PipelineError: the path holds no model this pipeline runs.
        """

    @abc.abstractmethod
    def run(self, request: BatchRequest, sink: BatchSink) -> BatchUsage:
        """Runs one checked request, its outputs to ``sink``.

        Raises:
            BadRequestError: the request cannot run (e.g. a prompt past the context).
            PipelineError: the model failed.
        """

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchUsage | PipelineError]:
        """Runs requests with one ``batch_key`` together; one at a time unless overridden."""
        results: list[BatchUsage | PipelineError] = []
        for request, sink in zip(requests, sinks, strict=True):
            try:
                results.append(self.run(request, sink))
            except PipelineError as exc:
                results.append(exc)
        return results

    def unload(self) -> None:  # noqa: B027
        """Frees the model; called once, last."""


def params_of(request: BatchRequest) -> Params:
    """The validated parameters of a checked request."""
    params = request.params
    if not isinstance(params, Params):
        raise TypeError("the request was not checked (BatchPipeline.checked)")
    return params
