"""Small real batch pipelines for the pool tests: they run in batch child processes, so they
live at a module's top level (a child imports them by name). Their "model" is a directory
that must exist, holding nothing."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Hashable, Sequence
from typing import Any, ClassVar

import numpy as np

from workers.batch import (
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
from workers.pipelines import BoolParam, FloatParam, IntParam, PipelineError, StrParam

__all__ = ["EchoPipeline", "GatherPipeline"]


def _load(path: str) -> None:
    if not os.path.isdir(path):
        raise PipelineError(f"no model directory at {path}")


class EchoPipeline(BatchPipeline):
    """Streams its input back in pieces of ``piece`` bytes, one unit per byte; crashes,
    sleeps or hoards memory when its parameters say so."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="test-echo",
        description="Echoes its input in pieces.",
        unit=BatchUnit.TOKEN,
        params=(
            IntParam(name="piece", default=3, minimum=1, maximum=1 << 20),
            BoolParam(name="crash", default=False),
            FloatParam(name="sleep", default=0.0, minimum=0.0, maximum=3600.0),
            IntParam(name="hoard_mib", default=0, minimum=0, maximum=4096),
        ),
        max_input=1 << 16,
    )

    def __init__(self) -> None:
        self._hoard: list[Any] = []

    @classmethod
    def check_request(cls, request: BatchRequest) -> None:
        if not request.input:
            raise BadRequestError("test-echo: the input is empty")

    @classmethod
    def quote(cls, request: BatchRequest) -> int:
        return len(request.input)

    def load(self, path: str, device: str) -> None:
        _load(path)

    def run(self, request: BatchRequest, sink: BatchSink) -> BatchUsage:
        params = params_of(request)
        if params.get_bool("crash"):
            os.kill(os.getpid(), signal.SIGKILL)
        if params.get_int("hoard_mib"):
            self._hoard.append(np.ones(params.get_int("hoard_mib") * 2**20, dtype=np.uint8))
            time.sleep(1.0)  # long enough for the guardian to look
        time.sleep(params.get_float("sleep"))
        if request.input == b"refuse":
            raise BadRequestError("test-echo: this input is refused")
        sink.start(
            [
                BatchOutput(name="echo", content_type="text/plain"),
                BatchOutput(name="pid", content_type="text/plain"),
            ]
        )
        piece = params.get_int("piece")
        for start in range(0, len(request.input), piece):
            sink.data(0, request.input[start : start + piece])
        sink.data(1, str(os.getpid()).encode())
        return BatchUsage(units=(len(request.input), 0))


class GatherPipeline(BatchPipeline):
    """Batches requests of one ``group`` (empty: alone); each answers with the size of the
    batch it ran in and the input, and the batch sleeps ``sleep`` seconds first."""

    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="test-gather",
        description="Reports the batches it runs.",
        unit=BatchUnit.TOKEN,
        params=(
            StrParam(name="group", default="", max_length=32),
            FloatParam(name="sleep", default=0.0, minimum=0.0, maximum=10.0),
        ),
        max_batch=4,
        max_input=1024,
    )

    @classmethod
    def quote(cls, request: BatchRequest) -> int:
        return 1

    def batch_key(self, request: BatchRequest) -> Hashable | None:
        return params_of(request).get_str("group") or None

    def load(self, path: str, device: str) -> None:
        _load(path)

    def run(self, request: BatchRequest, sink: BatchSink) -> BatchUsage:
        result = self.run_batch([request], [sink])[0]
        if isinstance(result, PipelineError):
            raise result
        return result

    def run_batch(
        self, requests: Sequence[BatchRequest], sinks: Sequence[BatchSink]
    ) -> list[BatchUsage | PipelineError]:
        time.sleep(max(params_of(r).get_float("sleep") for r in requests))
        for request, sink in zip(requests, sinks, strict=True):
            sink.start([BatchOutput(name="text", content_type="text/plain")])
            sink.data(0, f"{len(requests)} {os.getpid()} ".encode() + request.input)
        return [BatchUsage(units=(1,)) for _ in requests]
