"""Pictures in and out of the batch image pipelines: bounded reading, PNG writing.

How this works
--------------
A picture arrives as the bytes a client sent. Its size is a claim the file makes in its header,
and decoding is what costs: a PNG of a few hundred bytes can claim 100000 x 100000 pixels, 30 GB
once decoded (a decompression bomb). So every reader here first opens the header only (Pillow's
``Image.open`` reads the header and stops), refuses a file past :data:`MAX_INPUT_BYTES` or a
picture past :data:`MAX_INPUT_PIXELS` (:class:`RequestTooLargeError`, 413), and decodes the
pixels only after that. :func:`picture_size` never decodes, so a gateway can check and price a
request with it.

Taken formats are :data:`FORMATS` (PNG, JPEG, WebP, GIF, BMP); anything else, or a file that is
cut short or broken, is a :class:`BadRequestError` (400). An animated picture gives its first
frame; 16-bit grey pictures are scaled to 8 bits. Pixels are read as they are stored: EXIF
orientation is not applied (as ai-worker does).

Outputs are PNG with Pillow's default settings and no metadata: the same pixels always give
the same bytes.

Pillow is imported when first needed, never at import time, and torch not at all.
"""

from __future__ import annotations

import io
import warnings
from typing import TYPE_CHECKING

from workers.batch.base import BadRequestError, RequestTooLargeError
from workers.pipelines.params import PipelineError

if TYPE_CHECKING:
    from PIL import Image

__all__ = [
    "FORMATS",
    "MAX_INPUT_BYTES",
    "MAX_INPUT_PIXELS",
    "encode_png",
    "picture_size",
    "read_picture",
]

MAX_INPUT_BYTES = 20 * 1024 * 1024
"""Largest picture file taken, in bytes (20 MiB); larger is refused with 413."""

_MAX_SIDE = 4096

MAX_INPUT_PIXELS = _MAX_SIDE * _MAX_SIDE
"""Most pixels a picture may claim (16 Mpx, 4096 x 4096), checked from its header before any
decoding; more is refused with 413."""

FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP")
"""Picture formats taken, as Pillow names them."""


def picture_size(data: bytes) -> tuple[int, int]:
    """The ``(width, height)`` a picture's header states, within the limits; no pixel is
    decoded.

    Raises:
        RequestTooLargeError: past :data:`MAX_INPUT_BYTES` or :data:`MAX_INPUT_PIXELS`.
        BadRequestError: not a picture in one of :data:`FORMATS`.
    """
    with _opened(data) as picture:
        return picture.size


def read_picture(data: bytes) -> Image.Image:
    """The picture in ``data``, decoded to 8-bit RGB, once its header passed the limits.

    Raises:
        RequestTooLargeError: past :data:`MAX_INPUT_BYTES` or :data:`MAX_INPUT_PIXELS`.
        BadRequestError: not a picture in one of :data:`FORMATS`, or cut short, or broken.
    """
    with _opened(data) as picture:
        try:
            picture.load()
        except Exception as exc:  # any of Pillow's decoders can fail on a broken file
            raise _not_a_picture(exc) from exc
        if picture.mode.startswith("I;16"):  # 16-bit grey: Pillow's RGB would clip, not scale
            import numpy as np
            from PIL import Image as pil_image

            grey = np.asarray(picture).astype(np.uint16) >> 8
            return pil_image.fromarray(grey.astype(np.uint8)).convert("RGB")
        return picture.convert("RGB")


def encode_png(picture: Image.Image) -> bytes:
    """``picture`` as PNG bytes: Pillow's default compression, no metadata, so the same pixels
    always give the same bytes."""
    out = io.BytesIO()
    picture.save(out, format="PNG")
    return out.getvalue()


def _opened(data: bytes) -> Image.Image:
    """The picture in ``data`` with its header read and checked, its pixels not yet decoded."""
    if len(data) > MAX_INPUT_BYTES:
        raise RequestTooLargeError(
            f"the picture is {len(data)} bytes, the limit is {MAX_INPUT_BYTES} "
            f"({MAX_INPUT_BYTES // (1024 * 1024)} MiB)"
        )
    if not data:
        raise BadRequestError("no picture: the input is empty")
    try:
        from PIL import Image as pil_image
    except ImportError as exc:
        raise PipelineError("reading pictures needs Pillow (pip install pillow)") from exc
    try:
        # Pillow warns at more than Image.MAX_IMAGE_PIXELS and refuses at twice that: both are
        # past our own limit, which is answered below with a message of ours.
        with warnings.catch_warnings(action="ignore", category=pil_image.DecompressionBombWarning):
            picture = pil_image.open(io.BytesIO(data), formats=FORMATS)
    except (pil_image.DecompressionBombError, pil_image.DecompressionBombWarning) as exc:
        raise RequestTooLargeError(
            f"the picture is past the limit of {MAX_INPUT_PIXELS} pixels "
            f"({_MAX_SIDE}x{_MAX_SIDE}): {exc}"
        ) from exc
    except Exception as exc:  # any of Pillow's format parsers can fail on a broken header
        raise _not_a_picture(exc) from exc
    width, height = picture.size
    if width * height > MAX_INPUT_PIXELS:
        picture.close()
        raise RequestTooLargeError(
            f"the picture is {width}x{height} = {width * height} pixels, the limit is "
            f"{MAX_INPUT_PIXELS} ({_MAX_SIDE}x{_MAX_SIDE})"
        )
    if width < 1 or height < 1:
        picture.close()
        raise BadRequestError(f"the picture is {width}x{height}: it has no pixels")
    return picture


def _not_a_picture(exc: Exception) -> BadRequestError:
    return BadRequestError(
        f"not a picture PIL can read ({', '.join(FORMATS)}): {type(exc).__name__}: {exc}"
    )
