"""The settings of the work itself: the worker that transcodes and runs pipelines, and the live
AI pipeline run on every stream."""

from __future__ import annotations

import json
from typing import Any

import attrs

from lpstream.config.setting import setting
from lpstream.config.values import parse_pipeline_params

__all__ = ["AiSection", "WorkerSection"]

_NO_PARAMS: Any = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class WorkerSection:
    """The worker that transcodes and runs pipelines."""

    capacity: int = setting(
        2,
        "Work the worker takes at once, in sessions' worth: one is the default ladder "
        "(360p + 240p) from a 30 fps source of 640x360 or more, 9.98 Mpx/s; cheaper sessions "
        "take less of it, dearer ones more.",
        kind=int,
        low=1,
        high=64,
    )
    encoder: str = setting(
        "auto",
        "Video encoder: auto picks NVENC when a GPU is present, else libx264.",
        choices=("auto", "libx264", "nvenc"),
    )
    models_dir: str | None = setting(
        None,
        "Folder of the models live AI clients may name (a pipeline's 'model' parameter is the "
        "name of a file or folder in it, never a path); default: <data-dir>/models (none "
        "without a data dir: then no model can be named).",
    )


@attrs.frozen(kw_only=True)
class AiSection:
    """Live AI run on every stream."""

    pipeline: str = setting(
        "",
        "Live AI pipeline run on every stream published (its output is the 'ai' rendition, "
        "/hls/{stream}/ai/index.m3u8); default: none (start one with POST /api/ai/{stream}).",
    )
    pipeline_params: dict[str, str | int | float | bool] = setting(  # noqa: RUF009 (a field specifier)
        _NO_PARAMS,
        "Starting parameters of --pipeline, as a JSON object, e.g. '{\"strength\": 0.5}'.",
        kind=dict,
        parse=parse_pipeline_params,
        show=json.dumps,
    )
