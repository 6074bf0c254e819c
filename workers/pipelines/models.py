"""Models a client may name: an entry of the worker's models directory, never a path.

How this works
--------------
A pipeline parameter declared as a ``ModelParam`` (the ``torchscript`` pipeline's ``model``,
``img2img-diffusion``'s ``model``) takes the *name* of an entry of the worker's models
directory (``--models-dir``, default ``<data-dir>/models``): a file (a TorchScript module) or
a folder (a diffusers model) put there by whoever runs the worker. What a client sends is
checked where parameters are validated, before anything is loaded:

* the form (``model_name_problem``), wherever the parameters are read, the gateway included:
  a name with a path separator (``/``, ``\\``), ``.`` or ``..``, a NUL, or longer than 255
  characters is refused, so an absolute path or a way out of the directory never gets in;
* the entry (``ModelDirectory.problem``), on the worker: a name the directory has no entry
  for is refused. A worker without a models directory refuses every model name.

The refusal is an ``InvalidParamsError`` naming the parameter and the reason (400 at the
gateway's ``POST /api/ai/{stream}`` and at the worker). The pipeline then loads
``ModelDirectory.path_of(name)``.
"""

from __future__ import annotations

from pathlib import Path

import attrs

__all__ = ["MAX_MODEL_NAME", "ModelDirectory", "model_name_problem"]

MAX_MODEL_NAME = 255
"""Longest model name (a file name's limit on common filesystems)."""


def model_name_problem(name: str) -> str | None:
    """What makes ``name`` unusable as a model name whatever the directory holds (None if
    nothing): a path, a way up, a NUL, too long."""
    if not name:
        return "is empty"
    if len(name) > MAX_MODEL_NAME:
        return f"is longer than {MAX_MODEL_NAME} characters"
    if "\0" in name:
        return "holds a NUL"
    if "/" in name or "\\" in name:
        return "is a path: name a model in the worker's models directory, without '/' or '\\'"
    if name in (".", ".."):
        return f"is {name!r}: name a model in the worker's models directory"
    return None


@attrs.frozen
class ModelDirectory:
    """The folder a worker's pipelines load their models from (``--models-dir``)."""

    root: Path | None = None
    """The folder; None: this worker has none, and refuses every model name."""

    def problem(self, name: str) -> str | None:
        """Why ``name`` names no model here (None if it names one)."""
        problem = model_name_problem(name)
        if problem is not None:
            return problem
        if self.root is None:
            return "names a model, but this worker has no models directory (--models-dir)"
        if not (self.root / name).exists():
            return f"is not in the worker's models directory ({self.root})"
        return None

    def path_of(self, name: str) -> str:
        """Where the model ``name`` is ("" for no name).

        Raises:
            ValueError: ``name`` names no model here (``problem`` says why).
        """
        if not name:
            return ""
        problem = self.problem(name)
        if problem is not None:
            raise ValueError(f"model {name!r} {problem}")
        assert self.root is not None
        return str(self.root / name)
