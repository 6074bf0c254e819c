"""A live AI pipeline of your own: a vignette that darkens the edges of the picture.

A pipeline is a class with a spec (name, parameters with defaults and bounds) and a
``process`` over a batch of frames as a ``float32 [B, 3, H, W]`` RGB tensor in ``[0, 1]``.
To make it available to ``lpstream`` workers, declare it in your package's ``pyproject.toml``:

    [project.entry-points."lpstream.pipelines"]
    vignette = "my_pipeline:VignettePipeline"

then start a session with ``POST /api/ai/{stream}`` and ``{"pipeline": "vignette"}``, and steer
``strength`` over the WebSocket (see ``examples/steer_ai.py``).

Run this file to try it on a test picture without a node: python examples/my_pipeline.py
"""

from __future__ import annotations

from typing import TYPE_CHECKING, ClassVar

from workers.pipelines import FloatParam, Params, PipelineSpec, RgbPipeline

if TYPE_CHECKING:
    import torch


class VignettePipeline(RgbPipeline):
    """``vignette``: darkens the picture towards its corners."""

    spec: ClassVar[PipelineSpec] = PipelineSpec(
        name="vignette",
        description="Darkens the edges of the picture.",
        params=(
            FloatParam(
                name="strength",
                default=0.6,
                minimum=0.0,
                maximum=1.0,
                description="0 leaves the picture alone, 1 makes the corners black",
            ),
        ),
    )

    def process(self, frames: torch.Tensor, params: Params) -> torch.Tensor:
        import torch

        _, _, height, width = frames.shape
        ys = torch.linspace(-1.0, 1.0, height, device=frames.device).view(height, 1)
        xs = torch.linspace(-1.0, 1.0, width, device=frames.device).view(1, width)
        distance = (xs * xs + ys * ys).sqrt() / 2**0.5  # 0 at the centre, 1 in the corners
        mask = 1.0 - params.get_float("strength") * distance
        return frames.mul_(mask.clamp_(0.0, 1.0))


def main() -> None:
    import av

    from workers.pipelines import PipelineRegistry

    registry = PipelineRegistry()
    registry.register(VignettePipeline)
    runner = registry.create("vignette", {"strength": 0.8})
    picture = av.VideoFrame(640, 360, "yuv420p")
    for plane, value in zip(picture.planes, (200, 128, 128), strict=True):
        plane.update(bytes([value]) * plane.buffer_size)  # a light grey picture
    picture.pts = 0
    [out] = runner.push(picture)
    rgb = out.to_ndarray(format="rgb24")
    print(f"centre {rgb[180, 320].tolist()}, corner {rgb[0, 0].tolist()}")
    runner.stop()


if __name__ == "__main__":
    main()
