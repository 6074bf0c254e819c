"""``torchscript``: an image-to-image TorchScript model loaded from a file.

The model takes ``float32 [B, 3, H, W]`` RGB in ``[0, 1]`` and returns the same shape; its
output is clamped to ``[0, 1]``. The ``model`` parameter names a file in the worker's models
directory (``--models-dir``; a path is refused: ``workers.pipelines.models``); it is read with
``torch.jit.load`` (onto the runner's device) in ``prepare``, and again when the parameter
changes while running. Put only files you trust there: TorchScript runs the code it holds.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from workers.pipelines.base import ModelPipeline, PipelineSpec
from workers.pipelines.params import ModelParam, Params, PipelineError

if TYPE_CHECKING:
    import torch

__all__ = ["TorchScriptPipeline", "load_torchscript"]


def load_torchscript(path: str, device: str = "cpu") -> torch.jit.ScriptModule:
    """Loads a TorchScript file onto ``device``, in eval mode.

    Raises:
        PipelineError: the path is empty, missing, or not a TorchScript file.
    """
    import torch

    if not path:
        raise PipelineError("the torchscript pipeline needs a 'model' path")
    if not Path(path).is_file():
        raise PipelineError(f"TorchScript model {path!r} is not a file")
    try:
        with warnings.catch_warnings():
            # torch 2.13 deprecates TorchScript for torch.export; the files still load.
            warnings.filterwarnings("ignore", r".*torch\.jit\.load", DeprecationWarning)
            module: torch.jit.ScriptModule = torch.jit.load(  # type: ignore[no-untyped-call]
                path, map_location=device
            )
    except (RuntimeError, ValueError) as exc:
        raise PipelineError(f"cannot load TorchScript model {path!r}: {exc}") from exc
    module.eval()
    return module


class TorchScriptPipeline(ModelPipeline):
    """Runs a TorchScript image-to-image module on each batch."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="torchscript",
        description="Runs an image-to-image TorchScript model (RGB in [0, 1], same shape out).",
        cost=4.0,
        params=(
            ModelParam(
                name="model",
                description="name of a TorchScript file in the worker's models directory",
            ),
        ),
    )

    def __init__(self) -> None:
        super().__init__()
        self._module: torch.jit.ScriptModule | None = None

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        import torch

        if self._module is None:
            raise PipelineError("the torchscript pipeline was not prepared")
        out = self._module(frames)
        if not isinstance(out, torch.Tensor) or out.shape != frames.shape:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise PipelineError(
                f"the TorchScript model returned {shape}; expected {tuple(frames.shape)}"
            )
        return out.clamp(0.0, 1.0)

    def stop(self) -> None:
        self._module = None

    def load_model(self, path: str) -> None:
        self._module = load_torchscript(path, self._device)
