"""LL-HLS parts of a segment: where each begins, and cutting the muxer's output into them.

How this works:

With a ``part_target``, each segment is also delivered in *parts*: runs of whole frames of
about the target, each a ``PartCompleted`` whose bytes are exactly the ``SegmentData`` bytes
since the previous part, so parts concatenate into the segment.

Cuts are decided on input by the segmenter (a video packet at least about ``part_target``
after the part's first one opens the next part), noted here with the packet's ordinal, and
applied to the muxer's output by :class:`PartCutter`: one muxer per segment, its output split
on 188-byte TS packets just before the PES that starts the cut frame. The muxer writes one PES
per video packet, so counting video PES starts on the video PID finds the cut frame whatever
the interleaver and the audio PES buffering hold back (audio a few ms older than the cut may
land in the next part; it plays on in order). Every part opens with PAT and PMT (moved from
the end of the previous part, or copied from the segment's first ones), and the PSI continuity
counters are renumbered so the segment stays a valid TS; without parts nothing is inserted and
the bytes are the muxer's.

A part is ``independent`` when its first frame is a keyframe (always the first part of a
segment, unless the segment was forced).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import attrs

from lpstream.media.mpegts import (
    PACKET_SIZE,
    PAT_PID,
    SDT_PID,
    SYNC_BYTE,
    VIDEO_STREAM_TYPES,
    packet_pid,
    pat_pmt_pids,
    pmt_stream_pid,
    psi_section,
    unit_start,
)

from .events import PartCompleted

__all__ = ["PartCutter", "SegmentParts"]


@attrs.define
class PartCutter:
    """Splits one segment's MPEG-TS output into parts (see the module comment)."""

    on_bytes: Callable[[bytes], None]
    """Takes the segment's bytes, final and in order."""
    on_part: Callable[[bytes], None]
    """Takes a finished part's bytes (after the ``on_bytes`` calls that carried them)."""
    _partial: bytes = b""
    _held: list[bytearray] = attrs.Factory(list)
    _part: bytearray = attrs.Factory(bytearray)
    _out: bytearray = attrs.Factory(bytearray)
    _pmt_pids: set[int] = attrs.Factory(set)
    _video_pid: int | None = None
    _pat: bytes | None = None
    _pmt: bytes | None = None
    _counters: dict[int, int] = attrs.Factory(dict)
    _pes_seen: int = 0
    _cuts: deque[int] = attrs.Factory(deque)

    def cut_before(self, ordinal: int) -> None:
        """The video packet with this ordinal (from 0, in mux order) opens a new part."""
        self._cuts.append(ordinal)

    def cancel_cut(self, ordinal: int) -> None:
        """Takes back ``cut_before(ordinal)`` if that packet never came (it was refused)."""
        if self._cuts and self._cuts[-1] == ordinal and self._pes_seen <= ordinal:
            self._cuts.pop()

    def write(self, data: bytes) -> None:
        buffered = self._partial + data
        whole = len(buffered) - len(buffered) % PACKET_SIZE
        self._partial = buffered[whole:]
        for offset in range(0, whole, PACKET_SIZE):
            self._packet(bytearray(buffered[offset : offset + PACKET_SIZE]))
        self._flush_out()

    def close(self) -> bytes:
        """Places what is left; returns the last part's bytes."""
        self._place_held()
        if self._partial:
            self._append(bytearray(self._partial))
            self._partial = b""
        self._flush_out()
        last, self._part = bytes(self._part), bytearray()
        return last

    def _is_psi(self, pid: int) -> bool:
        return pid in (PAT_PID, SDT_PID) or pid in self._pmt_pids

    def _packet(self, packet: bytearray) -> None:
        if packet[0] != SYNC_BYTE:
            self._place_held()
            self._append(packet)
            return
        pid = packet_pid(packet)
        if pid == PAT_PID:
            section = psi_section(packet)
            if section:
                self._pmt_pids.update(pat_pmt_pids(section))
                self._pat = self._pat or bytes(packet)
        elif pid in self._pmt_pids:
            video_pid = pmt_stream_pid(psi_section(packet), VIDEO_STREAM_TYPES)
            if video_pid is not None:
                self._video_pid = video_pid
                self._pmt = self._pmt or bytes(packet)
        if self._is_psi(pid):
            self._held.append(packet)  # placed with whatever follows: it may open a part
            return
        if pid == self._video_pid and unit_start(packet):
            ordinal, self._pes_seen = self._pes_seen, self._pes_seen + 1
            if self._cuts and self._cuts[0] == ordinal:
                self._cuts.popleft()
                self._start_part()
        self._place_held()
        self._append(packet)

    def _start_part(self) -> None:
        self._flush_out()
        if self._part:
            self.on_part(bytes(self._part))
            self._part = bytearray()
        held = {packet_pid(p) for p in self._held}
        opening: list[bytearray] = []
        if self._pat is not None and PAT_PID not in held:
            opening.append(bytearray(self._pat))
        if self._pmt is not None and not held & self._pmt_pids:
            opening.append(bytearray(self._pmt))
        self._held[:0] = opening

    def _place_held(self) -> None:
        for packet in self._held:
            pid = packet_pid(packet)
            count = self._counters.get(pid, 0)
            self._counters[pid] = count + 1
            packet[3] = (packet[3] & 0xF0) | (count & 0x0F)
            self._append(packet)
        self._held.clear()

    def _append(self, packet: bytearray) -> None:
        self._part += packet
        self._out += packet

    def _flush_out(self) -> None:
        if self._out:
            self.on_bytes(bytes(self._out))
            self._out = bytearray()


@attrs.define
class SegmentParts:
    """The parts of one open segment: where each began, and the cutter that delivers them.

    The segment's muxer writes into :meth:`write`; its bytes reach ``on_bytes`` and, when
    ``on_part`` is given, each finished part reaches it as a ``PartCompleted``.
    """

    seq: int
    """The segment's sequence number."""
    start_ms: int
    """Decode timestamp the segment (and its first part) opens at."""
    independent: bool
    """Whether the first part opens on a keyframe."""
    on_bytes: Callable[[bytes], None]
    """Takes the segment's bytes, final and in order."""
    on_part: Callable[[PartCompleted], None] | None
    """Takes each finished part; None when the segment is not delivered in parts."""
    _starts: list[tuple[int, bool]] = attrs.field(init=False, factory=list)
    """(start_ms, independent) of each part begun, in order."""
    _done: int = attrs.field(init=False, default=0)
    _cutter: PartCutter = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self._starts.append((self.start_ms, self.independent))
        self._cutter = PartCutter(
            on_bytes=self.on_bytes, on_part=lambda data: self._finish(data, end_ms=None)
        )

    @property
    def last_start_ms(self) -> int:
        """Where the newest part begins."""
        return self._starts[-1][0]

    def cut_before(self, ordinal: int, start_ms: int, *, keyframe: bool) -> None:
        """The segment's video packet ``ordinal`` (from 0), at ``start_ms``, opens a part."""
        self._cutter.cut_before(ordinal)
        self._starts.append((start_ms, keyframe))

    def cancel_cut(self, ordinal: int) -> None:
        """Takes back the last ``cut_before``: the muxer refused that packet."""
        self._cutter.cancel_cut(ordinal)
        self._starts.pop()

    def write(self, data: bytes) -> None:
        """Takes the muxer's output."""
        self._cutter.write(data)

    def close(self, end_ms: int) -> None:
        """The muxer is closed: delivers the last bytes and the last part, ending at
        ``end_ms``."""
        last = self._cutter.close()
        if last:
            self._finish(last, end_ms=end_ms)

    def _finish(self, data: bytes, *, end_ms: int | None) -> None:
        if self.on_part is None:
            return
        index = self._done
        self._done += 1
        start_ms, independent = self._starts[index]
        if end_ms is None:
            end_ms = self._starts[index + 1][0]
        self.on_part(
            PartCompleted(
                seq=self.seq,
                index=index,
                start_ms=start_ms,
                duration_ms=max(0, end_ms - start_ms),
                independent=independent,
                data=data,
            )
        )
