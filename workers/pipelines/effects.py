"""Effects computed in torch with no weights: ``cartoon`` and ``color-grade``.

Both work on ``float32 [B, 3, H, W]`` RGB in ``[0, 1]``. Per-channel arithmetic is done as
matrix products over the channel axis and the filters as small convolutions: on CPU these are
several times faster than the same maths written as per-channel elementwise expressions.
torch is imported inside the functions, so listing these pipelines needs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar, Final

from workers.pipelines.base import PipelineSpec, RgbPipeline
from workers.pipelines.params import ChoiceParam, FloatParam, IntParam, Params

if TYPE_CHECKING:
    import torch

__all__ = [
    "LOOKS",
    "CartoonPipeline",
    "ColorGradePipeline",
    "cartoon",
    "color_grade",
    "grade_matrix",
]

_LUMA: Final = (0.299, 0.587, 0.114)

LOOKS: Final[dict[str, tuple[tuple[float, float, float], ...]]] = {
    "none": ((1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)),
    "warm": ((1.10, 0.05, 0.0), (0.0, 1.02, 0.0), (0.0, 0.0, 0.85)),
    "cool": ((0.88, 0.0, 0.0), (0.0, 1.0, 0.04), (0.0, 0.06, 1.12)),
    "sepia": ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131)),
    "mono": (_LUMA, _LUMA, _LUMA),
}
"""Colour matrices (rows: output R, G, B from input R, G, B) of the ``color-grade`` looks."""


def grade_matrix(
    look: str, saturation: float, contrast: float, brightness: float
) -> tuple[list[list[float]], list[float]]:
    """The affine map (3x3 matrix, offset) of a grade before clamping and mixing.

    The look's matrix first, then saturation around the luma, then contrast around mid grey,
    then brightness.
    """
    m = [list(row) for row in LOOKS[look]]
    # Saturation: s * I + (1 - s) * (luma in every channel).
    sat = [
        [saturation * (i == j) + (1 - saturation) * _LUMA[j] for j in range(3)] for i in range(3)
    ]
    m = [[sum(sat[i][k] * m[k][j] for k in range(3)) for j in range(3)] for i in range(3)]
    m = [[contrast * v for v in row] for row in m]
    offset = [0.5 - 0.5 * contrast + brightness] * 3
    return m, offset


def color_grade(
    rgb: torch.Tensor,
    *,
    look: str = "warm",
    strength: float = 1.0,
    saturation: float = 1.0,
    contrast: float = 1.0,
    brightness: float = 0.0,
) -> torch.Tensor:
    """Grades ``rgb`` (``[B, 3, H, W]`` in ``[0, 1]``) and mixes it in by ``strength``.

    ``out = rgb + strength * (clamp(M @ rgb + offset) - rgb)`` with ``M, offset`` from
    :func:`grade_matrix`; a new tensor.
    """
    import torch

    batch, _, height, width = rgb.shape
    m, offset = grade_matrix(look, saturation, contrast, brightness)
    matrix = torch.tensor(m, dtype=rgb.dtype, device=rgb.device)
    bias = torch.tensor(offset, dtype=rgb.dtype, device=rgb.device).view(3, 1)
    flat = rgb.reshape(batch, 3, height * width)
    graded = torch.baddbmm(bias.expand(batch, 3, 1), matrix.expand(batch, 3, 3), flat)
    graded.clamp_(0.0, 1.0)
    return torch.lerp(flat, graded, strength).view(batch, 3, height, width)


def cartoon(
    rgb: torch.Tensor, *, levels: int = 6, smoothing: int = 1, edge_threshold: float = 0.25
) -> torch.Tensor:
    """A cel-shaded look: smoothed colours posterized to ``levels``, dark outlines on edges.

    1. Box blur of radius ``smoothing`` (edge pixels average what exists).
    2. Each channel rounded to ``levels`` evenly spaced values.
    3. Sobel gradient magnitude of the blurred luma; ``edge = clamp((g - t) / t, 0, 1)``
       with ``t = edge_threshold``, and the colour is scaled by ``1 - edge``.

    Returns a new tensor of the same shape.
    """
    import torch
    import torch.nn.functional as F

    batch, _, height, width = rgb.shape
    smooth = rgb
    if smoothing > 0:
        size = 2 * smoothing + 1
        smooth = F.avg_pool2d(rgb, size, stride=1, padding=smoothing, count_include_pad=False)
    steps = levels - 1
    poster = smooth.mul(steps).round_().div_(steps)
    luma_weights = torch.tensor([_LUMA], dtype=rgb.dtype, device=rgb.device)
    luma = torch.matmul(luma_weights, smooth.reshape(batch, 3, height * width))
    luma = F.pad(luma.view(batch, 1, height, width), (1, 1, 1, 1), mode="replicate")
    sobel = torch.tensor(
        [
            [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]],
            [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]],
        ],
        dtype=rgb.dtype,
        device=rgb.device,
    ).unsqueeze(1)
    gradients = F.conv2d(luma, sobel)
    magnitude = gradients.square_().sum(dim=1, keepdim=True).sqrt_()
    keep = magnitude.sub_(edge_threshold).div_(-edge_threshold).clamp_(-1.0, 0.0).add_(1.0)
    return poster.mul_(keep)


class ColorGradePipeline(RgbPipeline):
    """``color-grade``: a look (colour matrix), saturation, contrast and brightness."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="color-grade",
        description="Colour grade: a look plus saturation, contrast and brightness, mixed in.",
        cost=2.0,
        params=(
            ChoiceParam(name="look", default="warm", choices=tuple(LOOKS)),
            FloatParam(
                name="strength",
                default=1.0,
                minimum=0.0,
                maximum=1.0,
                description="0 leaves the frame as it is, 1 applies the full grade",
            ),
            FloatParam(name="saturation", default=1.0, minimum=0.0, maximum=3.0),
            FloatParam(name="contrast", default=1.0, minimum=0.0, maximum=3.0),
            FloatParam(name="brightness", default=0.0, minimum=-1.0, maximum=1.0),
        ),
    )

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        return color_grade(
            frames,
            look=params.get_str("look"),
            strength=params.get_float("strength"),
            saturation=params.get_float("saturation"),
            contrast=params.get_float("contrast"),
            brightness=params.get_float("brightness"),
        )


class CartoonPipeline(RgbPipeline):
    """``cartoon``: posterized colours with dark outlines on edges."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="cartoon",
        description="Cartoon: smoothed, posterized colours with dark outlines on edges.",
        cost=3.0,
        params=(
            IntParam(
                name="levels", default=6, minimum=2, maximum=64, description="colours per channel"
            ),
            IntParam(name="smoothing", default=1, minimum=0, maximum=4, description="blur radius"),
            FloatParam(
                name="edge_threshold",
                default=0.25,
                minimum=0.01,
                maximum=4.0,
                description="Sobel magnitude where outlines start (they are full at twice it)",
            ),
        ),
    )

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        return cartoon(
            frames,
            levels=params.get_int("levels"),
            smoothing=params.get_int("smoothing"),
            edge_threshold=params.get_float("edge_threshold"),
        )
