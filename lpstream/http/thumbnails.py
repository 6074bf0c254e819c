"""Thumbnails of live streams: a small JPEG of the latest source keyframe, for the dashboard.

How this works:

* The picture is the first frame of the newest complete ``source`` segment the stream lists
  (``LowLatencyStream.segment``). Segments are cut at keyframes, so that frame is a keyframe:
  decoding it reads only the segment's first packets, never the whole segment, and needs no
  decoder state kept between requests.
* :class:`ThumbnailCache` keeps one JPEG per stream. A request gets the kept one while it is
  of the newest segment or younger than ``max_age``; otherwise one is made. Decoding and
  scaling run in a thread (PyAV releases the GIL), one at a time for the whole node
  (a ``CapacityLimiter`` of 1), and at most ``max_waiting`` requests wait for that turn:
  past them a request gets the kept picture, or 503 when there is none. So the work is bounded
  by the number of live streams over ``max_age`` whatever the viewers of the dashboard do.
* A segment whose first frame does not decode (a publisher's bad bytes) gives
  :class:`~lpstream.errors.MediaError`; the route answers 404 "no picture" and the stream
  goes on: the bytes were already checked by the segmenter, and this is only a picture.
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction

import attrs
import av
import trio

from lpstream.errors import BusyError, MediaError
from lpstream.media.segment_format import segment_format
from lpstream.playback.llhls import LowLatencyStream

__all__ = [
    "DEFAULT_MAX_AGE",
    "DEFAULT_MAX_KEPT",
    "DEFAULT_MAX_WAITING",
    "THUMBNAIL_WIDTH",
    "Thumbnail",
    "ThumbnailCache",
    "first_frame_jpeg",
    "latest_source_segment",
]

log = logging.getLogger("lpstream.http")

THUMBNAIL_WIDTH = 320
"""Width of a thumbnail in pixels; the height keeps the source's aspect (even)."""
DEFAULT_MAX_AGE = 3.0
"""Seconds a thumbnail is served before a newer segment replaces it."""
DEFAULT_MAX_WAITING = 8
"""Requests that may wait for the node's one decoder at once."""
DEFAULT_MAX_KEPT = 256
"""Thumbnails kept at most (one per stream)."""
MAX_PACKETS = 600
"""Packets read from a segment before giving up on its first frame (a frame that never
comes: a stream without a keyframe where one should be)."""


@attrs.frozen(kw_only=True)
class Thumbnail:
    """A picture of one stream."""

    seq: int
    """The source segment it is the first frame of."""
    jpeg: bytes
    """The JPEG file."""
    made_at: float
    """When it was made (trio time)."""


def latest_source_segment(stream: LowLatencyStream) -> tuple[int, bytes] | None:
    """The sequence number and bytes of the newest complete source segment still kept, or
    None before the first one (or when every segment in the window is a gap)."""
    source = stream.rendition_order[0]
    for listed in reversed(stream.playlist(source).segments):
        data = stream.segment_file(source, listed.entry.seq)
        if data is not None:
            return listed.entry.seq, data
    return None


def first_frame_jpeg(segment: bytes, width: int = THUMBNAIL_WIDTH) -> bytes:
    """The first video frame of a ``segment`` (MPEG-TS, or fragmented MP4 with its init
    section) as a JPEG ``width`` pixels wide.

    Blocking (PyAV): run it in a thread.

    Raises:
        MediaError: the segment has no video frame that decodes.
    """
    try:
        with av.open(io.BytesIO(segment), mode="r", format=segment_format(segment)) as container:
            if not container.streams.video:
                raise MediaError("the segment has no video")
            stream = container.streams.video[0]
            frame = None
            for count, packet in enumerate(container.demux(stream)):
                if count >= MAX_PACKETS:
                    break
                frames = packet.decode()
                if frames:
                    frame = frames[0]
                    break
            if frame is None:
                raise MediaError("no frame of the segment decodes")
            height = max(2, round(frame.height * width / frame.width / 2) * 2)
            small = frame.reformat(width=width, height=height, format="yuvj420p")
        encoder = av.CodecContext.create("mjpeg", "w")
        encoder.width, encoder.height = width, height
        encoder.pix_fmt = "yuvj420p"
        encoder.time_base = Fraction(1, 1)
        encoder.options = {"qmin": "2", "qmax": "8"}
        packets = [*encoder.encode(small), *encoder.encode(None)]
    except av.FFmpegError as exc:
        raise MediaError(f"the segment does not decode: {exc}") from None
    return b"".join(bytes(p) for p in packets)


@attrs.define
class ThumbnailCache:
    """The node's thumbnails and its one decoder (see the module comment)."""

    width: int = THUMBNAIL_WIDTH
    """Width of the thumbnails in pixels."""
    max_age: float = DEFAULT_MAX_AGE
    """Seconds a thumbnail is served before a newer segment replaces it."""
    max_waiting: int = DEFAULT_MAX_WAITING
    """Requests that may wait for the decoder at once."""
    max_kept: int = DEFAULT_MAX_KEPT
    """Thumbnails kept at most; past it the oldest goes (streams that ended unasked)."""
    _kept: dict[str, Thumbnail] = attrs.field(init=False, factory=dict)
    _decoder: trio.CapacityLimiter = attrs.field(
        init=False, factory=lambda: trio.CapacityLimiter(1)
    )
    _waiting: int = attrs.field(init=False, default=0)
    _made: int = attrs.field(init=False, default=0)

    @property
    def made(self) -> int:
        """Thumbnails decoded since start."""
        return self._made

    def forget(self, name: str) -> None:
        """Drops the thumbnail of a stream that is no longer live."""
        self._kept.pop(name, None)

    def _fresh(self, name: str, seq: int, now: float) -> Thumbnail | None:
        kept = self._kept.get(name)
        if kept is not None and (kept.seq == seq or now - kept.made_at < self.max_age):
            return kept
        return None

    async def thumbnail(self, name: str, stream: LowLatencyStream) -> Thumbnail | None:
        """The thumbnail of live stream ``name``; None before it has a source segment.

        Raises:
            MediaError: the newest segment's first frame does not decode.
            BusyError: ``max_waiting`` requests wait for the decoder and none is kept.
        """
        latest = latest_source_segment(stream)
        if latest is None:
            return None
        seq, data = latest
        fresh = self._fresh(name, seq, trio.current_time())
        if fresh is not None:
            return fresh
        if self._waiting >= self.max_waiting:
            kept = self._kept.get(name)
            if kept is None:
                raise BusyError(f"{self.max_waiting} thumbnails are being made; retry shortly")
            return kept
        self._waiting += 1
        try:
            async with self._decoder:
                # Another request may have made it while this one waited.
                fresh = self._fresh(name, seq, trio.current_time())
                if fresh is not None:
                    return fresh
                jpeg = await trio.to_thread.run_sync(first_frame_jpeg, data, self.width)
        finally:
            self._waiting -= 1
        made = Thumbnail(seq=seq, jpeg=jpeg, made_at=trio.current_time())
        self._made += 1
        self._kept[name] = made
        while len(self._kept) > self.max_kept:
            del self._kept[min(self._kept, key=lambda n: self._kept[n].made_at)]
        return made
