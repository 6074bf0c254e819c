"""Models loaded from a local directory, offline: how every AI pipeline loads its model.

How this works
--------------
The live diffusion pipeline (:mod:`workers.pipelines.diffusion`) and the batch pipelines
(:mod:`workers.batch`) load their models the same way, here:

* from a directory on the worker's disk with ``local_files_only=True``: nothing is ever
  downloaded, a model that is not there fails to load;
* in the device's dtype: float16 on CUDA (bfloat16 where asked and the GPU has it), float32
  elsewhere;
* onto the device, in eval mode (diffusers' progress bars off);
* with one :class:`PipelineError` for whatever goes wrong: the library missing (saying what to
  install), the directory missing, a broken model (any exception from the library's layers,
  with the model and its path). A model the caller cannot run is refused by its ``accept``
  check before it is moved to the device.

Warnings diffusers raises while loading (a dated config: ``FutureWarning``) are logged, not
raised: they cannot fail a load. numpy 2's ``DeprecationWarning`` about diffusers' schedulers
calling ``np.array`` on tensors is dropped.

torch, diffusers and transformers are imported by name when a model loads, never when this
module is imported: a gateway checks and prices requests with the pipeline classes and no
torch.
"""

from __future__ import annotations

import importlib
import logging
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from workers.pipelines.params import PipelineError

if TYPE_CHECKING:
    import torch

__all__ = [
    "TransformersModel",
    "load_diffusers",
    "load_transformers",
    "require_directory",
]

_log = logging.getLogger(__name__)

_INSTALLS = {
    "diffusers": "diffusers and transformers",
    "transformers": "torch and transformers",
}
"""What a library's users are told they need when it is missing."""


def require_directory(path: str, model: str) -> Path:
    """``path`` as a directory.

    Args:
        path: where the model should be.
        model: what it is, for the message (``"llm model"``).

    Raises:
        PipelineError: ``path`` is empty or no directory.
    """
    if not path or not Path(path).is_dir():
        raise PipelineError(f"{model} {path!r} is not a directory")
    return Path(path)


def _import_library(name: str, user: str) -> Any:
    """The module ``name`` (``diffusers``, ``transformers``), once torch is importable too.

    Imported by name: these libraries' annotations are too loose for mypy --strict to follow.

    Raises:
        PipelineError: torch or the library is missing, saying what ``user`` needs installed.
    """
    try:
        importlib.import_module("torch")
        return importlib.import_module(name)
    except ImportError as exc:
        raise PipelineError(
            f"{user} needs {_INSTALLS.get(name, name)} (pip install 'lpstream[ai]')"
        ) from exc


def _weights_dtype(device: str, *, bfloat16: bool = False) -> torch.dtype:
    """The dtype a model's weights load in on ``device``: float16 on CUDA (bfloat16 if
    ``bfloat16`` and the GPU has it), float32 elsewhere."""
    import torch

    if not device.startswith("cuda"):
        return torch.float32
    if bfloat16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def load_diffusers(
    path: str,
    device: str,
    loader: str,
    *,
    model: str,
    user: str,
    accept: Callable[[Any], None] | None = None,
) -> Any:
    """Loads the local diffusers directory ``path`` with the diffusers class named ``loader``
    (``AutoPipelineForText2Image``...) onto ``device`` (see the module comment).

    Args:
        path: the model directory (``model_index.json`` and the components' folders).
        device: ``cpu``, ``cuda:N``.
        loader: the diffusers class whose ``from_pretrained`` loads it.
        model: what it is, for messages (``"text-to-image model"``).
        user: who loads it, for the message when diffusers is missing.
        accept: raises :class:`PipelineError` for a loaded pipeline the caller cannot run;
            called before the pipeline moves to ``device``.

    Raises:
        PipelineError: diffusers is missing, ``path`` is no diffusers model it can load, or
            ``accept`` refused it.
    """
    if not (Path(path) / "model_index.json").is_file():
        raise PipelineError(
            f"{model} {path!r} is not a diffusers model directory (no model_index.json)"
        )
    diffusers = _import_library("diffusers", user)
    dtype = _weights_dtype(device)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pipe = getattr(diffusers, loader).from_pretrained(
                path, local_files_only=True, dtype=dtype, low_cpu_mem_usage=False
            )
    except Exception as exc:  # a broken model directory fails in any of diffusers' layers
        raise PipelineError(f"cannot load {model} {path!r}: {exc}") from exc
    for warning in caught:
        if not issubclass(warning.category, DeprecationWarning):
            _log.warning("loading %s: %s", path, warning.message)
    if accept is not None:
        accept(pipe)
    try:
        pipe.set_progress_bar_config(disable=True)
        return pipe.to(device)
    except Exception as exc:  # out of device memory, a device torch cannot use
        raise PipelineError(f"cannot load {model} {path!r}: {exc}") from exc


@attrs.frozen(kw_only=True)
class TransformersModel:
    """A transformers model loaded by :func:`load_transformers`."""

    preprocessor: Any
    """What turns inputs into the model's tensors and back: its tokenizer or processor."""
    model: Any
    """The model, on :attr:`device`, in eval mode."""
    device: str
    """Where it runs: ``cpu``, ``cuda:N``."""


def load_transformers(
    path: str, device: str, preprocessor: str, loader: str, pipeline: str, *, bfloat16: bool = False
) -> TransformersModel:
    """Loads the local transformers directory ``path``: its preprocessor with the class named
    ``preprocessor`` (``AutoTokenizer``...), its weights with the class named ``loader``
    (``AutoModelForCausalLM``...) in the device's dtype, onto ``device`` (see the module
    comment).

    Args:
        path: the model directory (``config.json``, weights, tokenizer files).
        device: ``cpu``, ``cuda:N``.
        preprocessor: the transformers class that loads its tokenizer or processor.
        loader: the transformers class that loads its weights.
        pipeline: the pipeline loading it, for messages (``"llm"``).
        bfloat16: load the weights in bfloat16 on a GPU that has it.

    Raises:
        PipelineError: transformers is missing, or ``path`` is no model it can load.
    """
    model = f"{pipeline} model"
    require_directory(path, model)
    transformers = _import_library("transformers", f"the {pipeline} pipeline")
    dtype = _weights_dtype(device, bfloat16=bfloat16)
    try:
        loaded = getattr(transformers, preprocessor).from_pretrained(path, local_files_only=True)
        weights = getattr(transformers, loader).from_pretrained(
            path, local_files_only=True, dtype=dtype
        )
        weights = weights.to(device).eval()
    except Exception as exc:  # a broken directory fails in any of transformers' layers
        raise PipelineError(f"cannot load {model} {path!r}: {exc}") from exc
    return TransformersModel(preprocessor=loaded, model=weights, device=device)
