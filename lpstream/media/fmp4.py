"""Fragmented MP4 (CMAF) bytes, parsed in one place: the init section, fragments, keyframes.

How this works:

* An MP4 file is a sequence of boxes: a 32-bit size (the whole box, header included; 1 means
  a 64-bit ``largesize`` follows the type, 0 means "to the end of the file") and a FourCC
  type. A fragmented file opens with an *init section*, ``ftyp`` and a ``moov`` that
  describes the tracks (``trak``: ``tkhd`` track id, ``mdhd`` timescale, ``hdlr`` handler,
  ``stsd`` sample entry with its codec configuration box) and, in ``mvex``, each track's
  ``trex`` defaults. Then *fragments*: a ``moof`` that says what the samples are and the
  ``mdat`` that holds them, optionally behind ``styp``/``sidx``/``prft``/``emsg`` boxes.
* A ``moof`` holds one ``traf`` per track: ``tfhd`` (track id and default sample duration
  and flags), ``tfdt`` (the base decode time) and ``trun`` runs (a sample count, and per
  sample optionally a duration, size, flags and composition offset; the first sample's flags
  may be given on their own). A sample's flags come from the run, else ``tfhd``'s default,
  else ``trex``'s; it is a sync sample (a keyframe) when ``sample_is_non_sync_sample``
  (bit 16) is clear.
* :func:`init_and_media` splits a whole segment at the first box that opens a fragment
  (``moof``, ``styp``, ``sidx``, ``prft``, ``emsg``) after the ``moov``: HLS serves the init
  once (``EXT-X-MAP``) and the rest as media. :class:`Fmp4Reader` takes the same bytes in any
  pieces and says when the init section is complete (:class:`InitSection`, sent once the
  header of the first fragment's first box arrives, so both agree on where the init ends) and
  where each fragment ends (:class:`Fragment`: its bytes from the end of the previous one to
  the end of its ``mdat``, whether it starts with a video keyframe, and per track the decode
  time, sample count and duration), which is where LL-HLS parts are cut.
* Every size a peer controls is bounded before its bytes are buffered: a box, the init
  section and a fragment at :data:`MAX_BOX`, a ``moov`` or ``moof`` at :data:`MAX_MOOV`, a
  run at :data:`MAX_TRUN_SAMPLES`. Nesting is bounded by the parser itself, which only
  descends the fixed paths it knows (at most eight levels: moov/trak/mdia/minf/stbl/stsd, a
  sample entry and its configuration box), never a depth the bytes choose.

Sans-IO: bytes in, values out. Malformed bytes raise ``ValueError`` saying what is wrong;
nothing reads past the bytes it is given. Boxes after the last fragment that open none
(FFmpeg's ``mfra`` index at the end of a file) are accepted and belong to no event.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

import attrs

__all__ = [
    "MAX_BOX",
    "MAX_MOOV",
    "MAX_TRUN_SAMPLES",
    "Fmp4Event",
    "Fmp4Reader",
    "Fragment",
    "FragmentTrack",
    "InitSection",
    "TrackInfo",
    "init_and_media",
]

MAX_BOX = 64 * 1024 * 1024
"""The largest box, init section or fragment accepted, in bytes (64 MiB): what a reader may
buffer."""
MAX_MOOV = 1024 * 1024
"""The largest ``moov`` or ``moof`` box accepted, in bytes (1 MiB)."""
MAX_TRUN_SAMPLES = 4096
"""The most samples one ``trun`` may describe."""

_FRAGMENT_OPENERS = frozenset({"moof", "styp", "sidx", "prft", "emsg"})
_CONFIG_BOXES = frozenset({"avcC", "hvcC", "av1C", "vpcC", "esds", "dOps"})
_VISUAL_ENTRY = 78  # SampleEntry (8) + VisualSampleEntry fields (70): then its boxes
_AUDIO_ENTRY = {0: 28, 1: 44, 2: 64}  # by the (QuickTime) sound entry version
_NON_SYNC = 0x0001_0000  # sample_is_non_sync_sample in sample flags

Buffer = bytes | bytearray


@attrs.frozen(kw_only=True)
class TrackInfo:
    """A track as the ``moov`` describes it."""

    track_id: int
    """``track_ID``: the ``traf`` boxes of fragments name it."""
    handler: str
    """The handler type: ``vide`` for video, ``soun`` for sound."""
    timescale: int
    """Units per second of the track's decode times and durations."""
    codec: str
    """The FourCC of the sample entry: ``avc1``, ``hvc1``, ``hev1``, ``av01``, ``vp09``,
    ``mp4a``, ``Opus``…"""
    width: int
    """Picture width of a video track's sample entry; 0 for other tracks."""
    height: int
    """Picture height of a video track's sample entry; 0 for other tracks."""
    config: bytes
    """The payload of the sample entry's configuration box (``avcC``, ``hvcC``, ``av1C``,
    ``vpcC``, ``esds`` or ``dOps``), empty when it has none."""


@attrs.frozen(kw_only=True)
class FragmentTrack:
    """What one ``traf`` of a fragment says about its track's samples."""

    track_id: int
    """The track the samples belong to."""
    base_decode_time: int
    """Decode time of the first sample, in the track's timescale: the ``tfdt``, or where
    there is none, the end of the track's previous fragment."""
    sample_count: int
    """Samples in the fragment, all runs together."""
    duration: int
    """The samples' durations added up, in the track's timescale."""
    first_sample_sync: bool
    """Whether the first sample is a sync sample (False when there are no samples)."""


@attrs.frozen(kw_only=True)
class InitSection:
    """The init section is complete: everything before the first fragment."""

    data: bytes
    """Its bytes: ``ftyp``, ``moov`` and any box before the first fragment."""
    tracks: tuple[TrackInfo, ...]
    """The tracks, in the ``moov``'s order."""


@attrs.frozen(kw_only=True)
class Fragment:
    """A fragment is complete: a ``moof``, its ``mdat`` and the boxes before them."""

    data: bytes
    """Its bytes, from the end of the previous event's to the end of the ``mdat``."""
    starts_with_sync: bool
    """Whether it starts with a sync sample of every video track it holds and holds one (when
    the init has video; without video, whether every track starts with a sync sample): an
    LL-HLS part cut here is ``INDEPENDENT``."""
    tracks: tuple[FragmentTrack, ...]
    """One entry per ``traf``, in the ``moof``'s order."""


Fmp4Event = InitSection | Fragment
"""What :meth:`Fmp4Reader.feed` returns."""


class _Defaults(NamedTuple):
    duration: int
    flags: int


def _header(data: Buffer, offset: int, end: int) -> tuple[str, int, int] | None:
    """(type, header size, box size) of the box at ``offset``, size 0 for "to the end"; None
    when its header does not fit before ``end``."""
    if end - offset < 8:
        return None
    size = int.from_bytes(data[offset : offset + 4], "big")
    kind = bytes(data[offset + 4 : offset + 8]).decode("latin-1")
    if size == 1:
        if end - offset < 16:
            return None
        size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 16:
            raise ValueError(f"{kind!r} box: largesize {size} is under its 16-byte header")
        return kind, 16, size
    if 0 < size < 8:
        raise ValueError(f"{kind!r} box: size {size} is under its 8-byte header")
    return kind, 8, size


def _check_size(kind: str, size: int) -> None:
    if size > MAX_BOX:
        raise ValueError(f"{kind!r} box of {size} bytes is over MAX_BOX ({MAX_BOX})")
    if kind in ("moov", "moof") and size > MAX_MOOV:
        raise ValueError(f"{kind!r} box of {size} bytes is over MAX_MOOV ({MAX_MOOV})")


def _children(data: bytes, start: int, end: int) -> Iterator[tuple[str, int, int]]:
    """(type, payload start, payload end) of each box in ``data[start:end]``."""
    offset = start
    while offset < end:
        found = _header(data, offset, end)
        if found is None:
            raise ValueError(f"{end - offset} stray bytes where a box header should be")
        kind, head, size = found
        if size == 0 or offset + size > end:
            raise ValueError(f"{kind!r} box runs past the box that holds it")
        yield kind, offset + head, offset + size
        offset += size


def _child(data: bytes, start: int, end: int, *path: str) -> tuple[int, int] | None:
    """The payload bounds of the first box down ``path`` from ``data[start:end]``."""
    for kind in path:
        found = next(((s, e) for k, s, e in _children(data, start, end) if k == kind), None)
        if found is None:
            return None
        start, end = found
    return start, end


def _uint(data: bytes, offset: int, end: int, size: int = 4) -> int:
    if offset + size > end:
        raise ValueError("a box is too short for its fields")
    return int.from_bytes(data[offset : offset + size], "big")


def _full_box(data: bytes, bounds: tuple[int, int] | None, what: str) -> tuple[int, int, int]:
    """(version, payload start after version and flags, payload end) of a full box."""
    if bounds is None:
        raise ValueError(f"a {what}")
    start, end = bounds
    return _uint(data, start, end, 1), start + 4, end


def _sample_entry(data: bytes, start: int, end: int, handler: str) -> tuple[str, int, int, bytes]:
    """(codec, width, height, config) of the first sample entry of the stsd at ``start``."""
    entries = list(_children(data, start + 8, end)) if _uint(data, start + 4, end) else []
    if not entries:
        raise ValueError("a sample description without entries")
    codec, s, e = entries[0]
    width = height = 0
    if handler == "vide":
        width, height = _uint(data, s + 24, e, 2), _uint(data, s + 26, e, 2)
        boxes = s + _VISUAL_ENTRY
    elif handler == "soun":
        boxes = s + _AUDIO_ENTRY.get(_uint(data, s + 8, e, 2), _AUDIO_ENTRY[0])
    else:
        return codec, 0, 0, b""
    found = ((k, cs, ce) for k, cs, ce in _children(data, min(boxes, e), e) if k in _CONFIG_BOXES)
    config = next((data[cs:ce] for _, cs, ce in found), b"")
    return codec, width, height, config


def _track(data: bytes, start: int, end: int) -> TrackInfo:
    version, at, tkhd_end = _full_box(data, _child(data, start, end, "tkhd"), "trak without tkhd")
    track_id = _uint(data, at + (16 if version == 1 else 8), tkhd_end)
    version, at, mdhd_end = _full_box(
        data, _child(data, start, end, "mdia", "mdhd"), "trak without mdhd"
    )
    timescale = _uint(data, at + (16 if version == 1 else 8), mdhd_end)
    if timescale == 0:
        raise ValueError(f"track {track_id}: timescale 0")
    _, at, hdlr_end = _full_box(data, _child(data, start, end, "mdia", "hdlr"), "trak without hdlr")
    if at + 8 > hdlr_end:
        raise ValueError(f"track {track_id}: hdlr box too short")
    handler = data[at + 4 : at + 8].decode("latin-1")
    stsd = _child(data, start, end, "mdia", "minf", "stbl", "stsd")
    if stsd is None:
        raise ValueError(f"track {track_id} has no sample description")
    codec, width, height, config = _sample_entry(data, *stsd, handler)
    return TrackInfo(
        track_id=track_id,
        handler=handler,
        timescale=timescale,
        codec=codec,
        width=width,
        height=height,
        config=config,
    )


def _parse_moov(moov: bytes) -> tuple[tuple[TrackInfo, ...], dict[int, _Defaults]]:
    """The tracks and ``trex`` defaults of a whole ``moov`` box."""
    head = 16 if int.from_bytes(moov[:4], "big") == 1 else 8
    tracks: list[TrackInfo] = []
    defaults: dict[int, _Defaults] = {}
    for kind, start, end in _children(moov, head, len(moov)):
        if kind == "trak":
            tracks.append(_track(moov, start, end))
        elif kind == "mvex":
            for inner, s, e in _children(moov, start, end):
                if inner == "trex":
                    duration, flags = _uint(moov, s + 12, e), _uint(moov, s + 20, e)
                    defaults[_uint(moov, s + 4, e)] = _Defaults(duration, flags)
    ids = [t.track_id for t in tracks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"the moov names a track id twice: {ids}")
    return tuple(tracks), defaults


def _run(data: bytes, start: int, end: int, default: _Defaults) -> tuple[int, int, bool]:
    """(samples, duration, first sample is sync) of the trun payload ``data[start:end]``."""
    flags = _uint(data, start + 1, end, 3)
    count = _uint(data, start + 4, end)
    if count > MAX_TRUN_SAMPLES:
        raise ValueError(f"trun of {count} samples is over MAX_TRUN_SAMPLES ({MAX_TRUN_SAMPLES})")
    at = start + 8 + (4 if flags & 0x01 else 0)
    first_flags = _uint(data, at, end) if flags & 0x04 else None
    at += 4 if flags & 0x04 else 0
    fields = [bit for bit in (0x100, 0x200, 0x400, 0x800) if flags & bit]
    stride = 4 * len(fields)
    if at + stride * count > end:
        raise ValueError(f"trun of {count} samples is too short for them")
    if flags & 0x100:
        duration = sum(_uint(data, at + i * stride, end) for i in range(count))
    else:
        duration = default.duration * count
    if first_flags is None:
        first_flags = default.flags
        if flags & 0x400 and count:
            first_flags = _uint(data, at + 4 * fields.index(0x400), end)
    return count, duration, count > 0 and not first_flags & _NON_SYNC


def _traf(
    data: bytes, start: int, end: int, trex: dict[int, _Defaults], next_time: dict[int, int]
) -> FragmentTrack:
    _, at, tfhd_end = _full_box(data, _child(data, start, end, "tfhd"), "traf without tfhd")
    flags = _uint(data, at - 3, tfhd_end, 3)
    track_id = _uint(data, at, tfhd_end)
    if track_id not in next_time:
        raise ValueError(f"a traf for track {track_id}, which the moov does not describe")
    default = trex.get(track_id, _Defaults(0, 0))
    at += 4 + (8 if flags & 0x01 else 0) + (4 if flags & 0x02 else 0)
    duration = _uint(data, at, tfhd_end) if flags & 0x08 else default.duration
    at += (4 if flags & 0x08 else 0) + (4 if flags & 0x10 else 0)
    sample_flags = _uint(data, at, tfhd_end) if flags & 0x20 else default.flags
    default = _Defaults(duration, sample_flags)
    base = next_time[track_id]
    tfdt = _child(data, start, end, "tfdt")
    if tfdt is not None:
        version, at, tfdt_end = _full_box(data, tfdt, "tfdt")
        base = _uint(data, at, tfdt_end, 8 if version == 1 else 4)
    count = total = 0
    first_sync: bool | None = None
    for kind, s, e in _children(data, start, end):
        if kind == "trun":
            samples, length, sync = _run(data, s, e, default)
            if samples and first_sync is None:
                first_sync = sync
            count, total = count + samples, total + length
    next_time[track_id] = base + total
    return FragmentTrack(
        track_id=track_id,
        base_decode_time=base,
        sample_count=count,
        duration=total,
        first_sample_sync=bool(first_sync),
    )


def init_and_media(data: bytes) -> tuple[bytes, bytes]:
    """Splits a whole fMP4 segment into its init section (``ftyp``, ``moov`` and whatever
    comes before the first fragment) and its media part (the rest).

    A final ``mdat`` may be sized "to the end"; the media part is empty when there is no
    fragment.

    Raises:
        ValueError: there is no complete ``moov``, a box is malformed or cut short, a
            fragment comes before the ``moov``, or a size is over a limit.
    """
    offset, split, moov = 0, None, False
    while offset < len(data):
        found = _header(data, offset, len(data))
        if found is None:
            raise ValueError(f"the data ends inside a box header at offset {offset}")
        kind, _, size = found
        if size == 0:
            if kind != "mdat":
                raise ValueError(f"{kind!r} box sized to the end: only a final mdat may be")
            size = len(data) - offset
        _check_size(kind, size)
        if offset + size > len(data):
            raise ValueError(f"{kind!r} box of {size} bytes at offset {offset} is cut short")
        if kind == "moov":
            if moov:
                raise ValueError("a second moov")
            _parse_moov(data[offset : offset + size])
            moov = True
        elif kind in _FRAGMENT_OPENERS and split is None:
            if not moov:
                raise ValueError(f"{kind!r} box before the moov")
            split = offset
        offset += size
    if not moov:
        raise ValueError("no moov box")
    if split is None:
        return data, b""
    return data[:split], data[split:]


@attrs.define
class Fmp4Reader:
    """Reads fMP4 bytes fed in any pieces: an :class:`InitSection`, then a :class:`Fragment`
    for each complete fragment. Any ``ValueError`` is final: the stream is broken."""

    _buffer: bytearray = attrs.Factory(bytearray)
    _scanned: int = 0
    """Bytes of ``_buffer`` that are whole boxes already read."""
    _tracks: tuple[TrackInfo, ...] | None = None
    _trex: dict[int, _Defaults] = attrs.Factory(dict)
    _next_time: dict[int, int] = attrs.Factory(dict)
    _init_sent: bool = False
    _moof: tuple[FragmentTrack, ...] | None = None
    """The tracks of a read ``moof`` whose ``mdat`` has not come yet."""

    def feed(self, data: bytes) -> list[Fmp4Event]:
        """The events that ``data`` completes, in stream order.

        Raises:
            ValueError: the bytes are malformed, out of order, or a size is over a limit.
        """
        self._buffer += data
        events: list[Fmp4Event] = []
        while (found := _header(self._buffer, self._scanned, len(self._buffer))) is not None:
            kind, _, size = found
            if size == 0:
                raise ValueError(f"{kind!r} box sized to the end: a live stream has no end")
            _check_size(kind, size)
            if not self._init_sent and kind in _FRAGMENT_OPENERS:
                if self._tracks is None:
                    raise ValueError(f"{kind!r} box before the moov")
                events.append(self._init_section())
            end = self._scanned + size
            what = "fragment" if self._init_sent else "init section"
            if end > MAX_BOX:
                raise ValueError(f"{what} of {end} bytes or more is over MAX_BOX ({MAX_BOX})")
            self._check_order(kind)
            if len(self._buffer) < end:
                break
            start, self._scanned = self._scanned, end
            if kind == "moov":
                self._tracks, self._trex = _parse_moov(bytes(self._buffer[start:end]))
                self._next_time = {t.track_id: 0 for t in self._tracks}
            elif kind == "moof":
                self._moof = self._read_moof(bytes(self._buffer[start:end]))
            elif kind == "mdat" and self._moof is not None:
                events.append(self._fragment(self._moof))
        return events

    def finish(self) -> list[Fmp4Event]:
        """The stream has ended: the init section if it was not sent yet (an init-only
        stream).

        Raises:
            ValueError: the stream ends inside a box, after a ``moof`` without its ``mdat``,
                or without a ``moov``.
        """
        left = len(self._buffer) - self._scanned
        if left:
            raise ValueError(f"the stream ends inside a box, {left} bytes into it")
        if self._moof is not None:
            raise ValueError("the stream ends after a moof without its mdat")
        if self._init_sent:
            return []
        if self._tracks is None:
            raise ValueError("the stream ends without a moov")
        return [self._init_section()]

    def _check_order(self, kind: str) -> None:
        if kind == "moov" and self._tracks is not None:
            raise ValueError("a second moov")
        if not self._init_sent:
            return
        if kind == "mdat" and self._moof is None:
            raise ValueError("an mdat with no moof before it")
        if kind == "moof" and self._moof is not None:
            raise ValueError("a moof after a moof that has no mdat")

    def _read_moof(self, moof: bytes) -> tuple[FragmentTrack, ...]:
        head = 16 if int.from_bytes(moof[:4], "big") == 1 else 8
        return tuple(
            _traf(moof, s, e, self._trex, self._next_time)
            for kind, s, e in _children(moof, head, len(moof))
            if kind == "traf"
        )

    def _init_section(self) -> InitSection:
        assert self._tracks is not None
        event = InitSection(data=self._take(), tracks=self._tracks)
        self._init_sent = True
        return event

    def _fragment(self, tracks: tuple[FragmentTrack, ...]) -> Fragment:
        assert self._tracks is not None
        video = {t.track_id for t in self._tracks if t.handler == "vide"}
        leading = [t for t in tracks if t.track_id in video] if video else list(tracks)
        self._moof = None
        return Fragment(
            data=self._take(),
            starts_with_sync=bool(leading) and all(t.first_sample_sync for t in leading),
            tracks=tracks,
        )

    def _take(self) -> bytes:
        """The scanned bytes, removed from the buffer."""
        taken = bytes(self._buffer[: self._scanned])
        del self._buffer[: self._scanned]
        self._scanned = 0
        return taken
