"""Real-time video pipelines: the interface, the registry, the runner and the built-ins.

Built-ins: ``noop``, ``cartoon``, ``color-grade``, ``torchscript``. Other packages add more
through the ``lpstream.pipelines`` entry-point group. Importing this package imports no torch.
"""

from workers.pipelines.base import (
    Pipeline,
    PipelineContext,
    PipelineSpec,
    RgbPipeline,
    YuvPipeline,
)
from workers.pipelines.models import ModelDirectory, model_name_problem
from workers.pipelines.params import (
    BoolParam,
    ChoiceParam,
    FloatParam,
    IntParam,
    InvalidParamsError,
    ModelParam,
    Params,
    ParamSpec,
    PathParam,
    PipelineError,
    StrParam,
)
from workers.pipelines.registry import (
    BUILTIN_PIPELINES,
    ENTRY_POINT_GROUP,
    PipelineInfo,
    PipelineRegistry,
    UnknownPipelineError,
)
from workers.pipelines.runner import PipelineRunner, RunnerStatistics

__all__ = [
    "BUILTIN_PIPELINES",
    "ENTRY_POINT_GROUP",
    "BoolParam",
    "ChoiceParam",
    "FloatParam",
    "IntParam",
    "InvalidParamsError",
    "ModelDirectory",
    "ModelParam",
    "ParamSpec",
    "Params",
    "PathParam",
    "Pipeline",
    "PipelineContext",
    "PipelineError",
    "PipelineInfo",
    "PipelineRegistry",
    "PipelineRunner",
    "PipelineSpec",
    "RgbPipeline",
    "RunnerStatistics",
    "StrParam",
    "UnknownPipelineError",
    "YuvPipeline",
    "model_name_problem",
]
