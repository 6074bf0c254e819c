"""LL-HLS parts of a fragmented-MP4 source segment (AV1, VP9), cut as its bytes arrive.

How this works: the segmenter writes an AV1 or VP9 segment as one fragmented MP4 file, its
init section first, then a fragment (``moof`` + ``mdat``) about every 100 ms.
:class:`Fmp4PartCutter` reads the bytes as they come (:class:`~lpstream.media.fmp4.Fmp4Reader`),
hands the init section over once (HLS serves it as ``EXT-X-MAP``), and joins whole fragments
into parts of at least ``part_target`` seconds of video (the last part of a segment may be
shorter). A part is independent when its first fragment starts with a video sync sample.
MPEG-TS segments are cut by the segmenter itself (``ingest.segmenter.parts``).
"""

from __future__ import annotations

from collections.abc import Callable

import attrs

from lpstream.media.fmp4 import Fmp4Reader, Fragment, InitSection

__all__ = ["Fmp4Part", "Fmp4PartCutter"]


@attrs.frozen(kw_only=True)
class Fmp4Part:
    """One LL-HLS part: whole fragments."""

    data: bytes
    """The fragments' bytes."""
    start_ms: float
    """Decode time of its first video sample, in milliseconds."""
    duration: float
    """Seconds of video it holds."""
    independent: bool
    """Whether it starts with a video sync sample."""


@attrs.define
class Fmp4PartCutter:
    """Cuts one segment's fragmented MP4 into parts (see the module comment). A
    ``ValueError`` from :meth:`feed` or :meth:`finish` means the bytes are not fragmented MP4
    as the segmenter writes it: cut no more parts of this segment."""

    part_target: float
    """Seconds of video a part holds at least (except a segment's last)."""
    on_init: Callable[[bytes], None]
    """Takes the init section, once."""
    on_part: Callable[[Fmp4Part], None]
    """Takes each part, in order."""
    _reader: Fmp4Reader = attrs.Factory(Fmp4Reader)
    _video: dict[int, int] = attrs.Factory(dict)
    """Timescale of each video track (all tracks when there is no video), by track id."""
    _pending: list[Fragment] = attrs.Factory(list)
    _pending_s: float = 0.0

    def feed(self, data: bytes) -> None:
        """Takes the next bytes of the segment."""
        for event in self._reader.feed(data):
            if isinstance(event, InitSection):
                video = [t for t in event.tracks if t.handler == "vide"] or list(event.tracks)
                self._video = {t.track_id: t.timescale for t in video if t.timescale > 0}
                self.on_init(event.data)
            else:
                self._pending.append(event)
                self._pending_s += self._seconds(event)
                if self._pending_s >= self.part_target:
                    self._flush()

    def finish(self) -> None:
        """The segment is complete: its last fragments make its last part (a trailing
        fragment of sound alone counts a millisecond, so no byte is left out)."""
        if self._pending and self._pending_s <= 0:
            self._pending_s = 0.001
        self._flush()

    def _seconds(self, fragment: Fragment) -> float:
        return max(
            (
                t.duration / self._video[t.track_id]
                for t in fragment.tracks
                if t.track_id in self._video
            ),
            default=0.0,
        )

    def _start_ms(self, fragment: Fragment) -> float:
        for track in fragment.tracks:
            scale = self._video.get(track.track_id)
            if scale:
                return track.base_decode_time * 1000 / scale
        return 0.0

    def _flush(self) -> None:
        if not self._pending or self._pending_s <= 0:
            return
        first = self._pending[0]
        self.on_part(
            Fmp4Part(
                data=b"".join(f.data for f in self._pending),
                start_ms=self._start_ms(first),
                duration=self._pending_s,
                independent=first.starts_with_sync,
            )
        )
        self._pending, self._pending_s = [], 0.0
