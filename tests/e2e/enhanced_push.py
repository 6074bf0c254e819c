"""A publisher of HEVC, AV1 or VP9 over Enhanced RTMP: FFmpeg's own RTMP client, as PyAV's
FFmpeg 8 has it (Debian's ffmpeg 5.1 writes only H.264 to RTMP), paced to real time.

Run as ``python -m tests.e2e.enhanced_push URL CODEC SECONDS [WIDTHxHEIGHT]``; it exits 0 once
everything was sent, and with FFmpeg's error otherwise.
"""

from __future__ import annotations

import sys

import av

from tests.mediatools import write_enhanced

__all__ = ["main"]


def main(argv: list[str]) -> int:
    """Publishes a moving gradient with a tone to the URL in ``argv``, 30 fps, GOP 2 s."""
    url, codec, seconds = argv[0], argv[1], float(argv[2])
    width, height = (int(n) for n in (argv[3] if len(argv) > 3 else "640x360").split("x"))
    av.logging.set_level(av.logging.ERROR)
    # As OBS does, the client announces Enhanced RTMP in its connect (fourCcList).
    options = {"rtmp_enhanced_codecs": "hvc1,av01,vp09"}
    with av.open(url, "w", format="flv", options=options) as out:
        write_enhanced(out, codec, seconds=seconds, size=(width, height), paced=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
