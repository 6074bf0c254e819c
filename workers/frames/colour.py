"""YUV 4:2:0 to RGB and back, in torch, by the colour tags of the frames.

How this works: BT.601 or BT.709 by the frame's colour space tag, limited or full range by its
range tag (untagged frames are BT.601 limited range, as libswscale assumes). YUV to RGB repeats
each chroma sample over its 2x2 block, as libswscale's unscaled converter does; RGB to YUV
takes each block's mean. Both are written as matrix products (elementwise channel arithmetic
is several times slower on CPU) into tensors the caller passes in, so steady state allocates
nothing for them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from av.video.frame import VideoFrame

from .planes import YuvBatch

if TYPE_CHECKING:
    import torch

__all__ = ["colour_tags", "rgb_to_yuv420", "yuv420_to_rgb"]

# libavutil AVColorSpace / AVColorRange values used to pick the conversion matrix.
_SPC_BT709: Final = 1
_RANGE_JPEG: Final = 2

_KR_KB: Final = {False: (0.299, 0.114), True: (0.2126, 0.0722)}
"""Luma weights (Kr, Kb) of BT.601 (False) and BT.709 (True)."""


def colour_tags(frame: VideoFrame) -> tuple[bool, bool]:
    """(BT.709, full range) from the frame's tags; untagged frames are BT.601 limited range."""
    return frame.colorspace == _SPC_BT709, frame.color_range == _RANGE_JPEG


def yuv420_to_rgb(
    planes: YuvBatch, out: torch.Tensor, *, bt709: bool = False, full_range: bool = False
) -> torch.Tensor:
    """Converts YUV 4:2:0 planes into ``out`` (``float32 [B, 3, H, W]`` in ``[0, 1]``).

    Chroma is repeated over each 2x2 block. Values are clamped to ``[0, 1]``.

    Returns:
        ``out``.
    """
    import torch

    batch, height, width = planes.y.shape
    kr, kb = _KR_KB[bt709]
    kg = 1.0 - kr - kb
    y_scale, c_scale = (1 / 255, 1 / 255) if full_range else (1 / 219, 1 / 224)
    y_off = 0.0 if full_range else 16.0
    dtype, device = out.dtype, out.device
    luma = planes.y.to(dtype).sub_(y_off).mul_(y_scale).unsqueeze(1)
    # Chroma contribution of each channel at half resolution, as one matrix product.
    from_uv = torch.tensor(
        [
            [0.0, (2 - 2 * kr) * c_scale],
            [-(2 - 2 * kb) * kb / kg * c_scale, -(2 - 2 * kr) * kr / kg * c_scale],
            [(2 - 2 * kb) * c_scale, 0.0],
        ],
        dtype=dtype,
        device=device,
    )
    uv = torch.stack((planes.u, planes.v), dim=1).to(dtype).sub_(128.0)
    chroma = torch.matmul(from_uv, uv.view(batch, 2, -1)).view(batch, 3, height // 2, width // 2)
    # Each of the four pixels of a 2x2 block gets its luma plus the block's chroma.
    for row in (0, 1):
        for col in (0, 1):
            torch.add(luma[..., row::2, col::2], chroma, out=out[..., row::2, col::2])
    return out.clamp_(0.0, 1.0)


def rgb_to_yuv420(
    rgb: torch.Tensor, out: YuvBatch, *, bt709: bool = False, full_range: bool = False
) -> YuvBatch:
    """Converts ``float [B, 3, H, W]`` RGB in ``[0, 1]`` into the ``uint8`` planes ``out``.

    Chroma is computed from the mean RGB of each 2x2 block; values are rounded and clamped.

    Returns:
        ``out``.
    """
    import torch

    batch, _, height, width = rgb.shape
    kr, kb = _KR_KB[bt709]
    kg = 1.0 - kr - kb
    if full_range:
        y_scale, c_scale, y_off = 255.0, 255.0, 0.5
    else:
        y_scale, c_scale, y_off = 219.0, 224.0, 16.5
    # Matrix products: elementwise channel arithmetic is several times slower on CPU.
    to_y = torch.tensor([[kr, kg, kb]], dtype=rgb.dtype, device=rgb.device) * y_scale
    u_scale, v_scale = c_scale / (2 - 2 * kb) / 4, c_scale / (2 - 2 * kr) / 4  # 4: block sum
    to_uv = torch.tensor(
        [
            [-kr * u_scale, -kg * u_scale, (1 - kb) * u_scale],
            [(1 - kr) * v_scale, -kg * v_scale, -kb * v_scale],
        ],
        dtype=rgb.dtype,
        device=rgb.device,
    )
    luma = torch.matmul(to_y, rgb.reshape(batch, 3, height * width))
    out.y.copy_(luma.view(batch, height, width).add_(y_off).clamp_(0.0, 255.0))
    blocks = rgb[..., 0::2, 0::2] + rgb[..., 1::2, 0::2]
    blocks += rgb[..., 0::2, 1::2]
    blocks += rgb[..., 1::2, 1::2]
    chroma = torch.matmul(to_uv, blocks.reshape(batch, 3, -1)).add_(128.5).clamp_(0.0, 255.0)
    chroma = chroma.view(batch, 2, height // 2, width // 2)
    out.u.copy_(chroma[:, 0])
    out.v.copy_(chroma[:, 1])
    return out
