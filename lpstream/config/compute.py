"""The settings of the work itself: the worker that transcodes and runs pipelines, and the live
AI pipeline run on every stream."""

from __future__ import annotations

import json
from typing import Any

import attrs

from lpstream.config.setting import setting
from lpstream.config.values import memory_budget_text, parse_byte_size, parse_pipeline_params
from lpstream.errors import ConfigError

__all__ = ["AiSection", "WarmEntry", "WorkerSection", "parse_gpus", "parse_warm"]

_NO_PARAMS: Any = attrs.Factory(dict)

WarmEntry = tuple[str, dict[str, str | int | float | bool]]
"""A ``--warm`` value: the pipeline's name and its parameters."""


def parse_warm(text: str, flag: str) -> tuple[WarmEntry, ...]:
    """``NAME[=PARAMS_JSON]``: a pipeline loaded at start (a one-item tuple, as a repeated
    flag's values are joined)."""
    name, _, params = text.partition("=")
    name = name.strip()
    if not name:
        raise ConfigError(f"{flag}: {text!r}: expected NAME or NAME=PARAMS_JSON")
    return ((name, parse_pipeline_params(params, flag)),)


def _show_warm(entries: tuple[WarmEntry, ...]) -> list[str]:
    return [f"{name}={json.dumps(params)}" if params else name for name, params in entries]


def parse_gpus(text: str, flag: str) -> str:
    """``all``, ``none`` or device indices (``0,2``); whether the indices exist is checked
    against the machine at start."""
    value = text.strip().lower().replace(" ", "")
    if value in ("all", "none") or all(part.isdigit() for part in value.split(",")):
        return value
    raise ConfigError(f"{flag}: {text!r}: expected all, none or device indices such as 0,2")


def _parse_pipeline_memory(text: str, flag: str) -> int | None:
    value = parse_byte_size(text, flag=flag)
    return value or None


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
    gpus: str = setting(
        "all",
        "GPUs live AI sessions run on: all (every CUDA device present), none (the CPU), or "
        "device indices such as 0,2; an index this machine lacks stops the start.",
        parse=parse_gpus,
    )
    pipeline_isolation: bool = setting(
        True,
        "Run each live AI session's pipeline in a child process under a guardian that restarts "
        "it after a crash, a hang or memory past --pipeline-memory (the session gets an error "
        "event; transcodes never notice). --no-pipeline-isolation: pipelines run in the "
        "worker's process (a crash there takes the worker down).",
        kind=bool,
    )
    pipeline_memory: int | None = setting(
        None,
        "Resident memory a live AI pipeline's process may hold (e.g. 4G, 512M; 0: no limit); "
        "past it the process is stopped and restarted after a back-off, and the session gets "
        "an error event.",
        kind=int,
        parse=_parse_pipeline_memory,
        show=lambda value: memory_budget_text(value) if value else 0,
    )
    ai_models: str | None = setting(
        None,
        "Batch AI models (text-to-image, image-to-image, upscale, audio-to-text, llm): a JSON "
        "file in go-livepeer's aiModels.json shape, a list of {pipeline, model_id, "
        "price_per_unit, pixels_per_unit, warm, capacity} plus a local 'path' to the weights "
        "(relative to the file; never downloaded). An orchestrator offers and prices them, a "
        "worker runs those with a path (warm ones loaded at start).",
    )
    warm: tuple[WarmEntry, ...] = setting(
        (),
        "NAME[=PARAMS_JSON]: a live AI pipeline loaded at start, so a session of it starts "
        "without waiting for its model (repeat for more).",
        kind=tuple,
        parse=parse_warm,
        show=_show_warm,
        multiple=True,
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
