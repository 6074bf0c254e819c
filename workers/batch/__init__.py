"""Batch AI: request/response pipelines (text-to-image, image-to-image, upscale,
audio-to-text, llm), the models a node offers, and the pool of loaded models a worker runs
them on.

Built-in capabilities and those other packages declare in the ``lpstream.batch_pipelines``
entry-point group are listed by :class:`BatchRegistry`; the models a node offers are read by
:func:`load_ai_models` (``--ai-models FILE``); a worker runs requests on
:class:`BatchModels`. Importing this package imports no torch.
"""

from workers.batch.base import (
    BadRequestError,
    BatchOutput,
    BatchPipeline,
    BatchRequest,
    BatchSink,
    BatchSpec,
    BatchUnit,
    BatchUsage,
    RequestTooLargeError,
    params_of,
)
from workers.batch.catalog import (
    MAX_AI_MODELS,
    MAX_AI_MODELS_BYTES,
    AiModel,
    AiModelsError,
    ai_models_from,
    load_ai_models,
    wei_price,
)
from workers.batch.pool import BatchModels, UnknownModelError
from workers.batch.registry import (
    BATCH_ENTRY_POINT_GROUP,
    BUILTIN_BATCH_PIPELINES,
    BatchRegistry,
    UnknownCapabilityError,
)
from workers.batch.runner import (
    BatchOutcome,
    BatchRunner,
    IsolatedBatchRunner,
    LocalBatchRunner,
)

__all__ = [
    "BATCH_ENTRY_POINT_GROUP",
    "BUILTIN_BATCH_PIPELINES",
    "MAX_AI_MODELS",
    "MAX_AI_MODELS_BYTES",
    "AiModel",
    "AiModelsError",
    "BadRequestError",
    "BatchModels",
    "BatchOutcome",
    "BatchOutput",
    "BatchPipeline",
    "BatchRegistry",
    "BatchRequest",
    "BatchRunner",
    "BatchSink",
    "BatchSpec",
    "BatchUnit",
    "BatchUsage",
    "IsolatedBatchRunner",
    "LocalBatchRunner",
    "RequestTooLargeError",
    "UnknownCapabilityError",
    "UnknownModelError",
    "ai_models_from",
    "load_ai_models",
    "params_of",
    "wei_price",
]
