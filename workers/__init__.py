"""Compute for lpstream: ladder transcoding (libx264, libx265, SVT-AV1 / NVENC) and GPU
discovery.

This package imports only ``lpstream.media`` and ``lpstream.errors`` from the project.
"""

from .gpu import choose_encoder, encoder_for, nvenc_available
from .transcode import DataCallback, LadderTranscoder, RenditionOutput, transcode_file

__all__ = [
    "DataCallback",
    "LadderTranscoder",
    "RenditionOutput",
    "choose_encoder",
    "encoder_for",
    "nvenc_available",
    "transcode_file",
]
