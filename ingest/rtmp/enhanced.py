"""Enhanced RTMP (E-RTMP v1 and v2) media bodies, turned into :mod:`lpstream.media` values
(sans-IO).

How this works
--------------
An E-RTMP video body starts with the byte ``IsExHeader (1) | FrameType (3) | PacketType (4)``;
:func:`.flv.video_events` sends here every body whose high bit is set. Read in order:

1. ModEx (packet type 7), repeated: a size (``UI8 + 1``; 256 means a ``UI16 + 1`` follows),
   that many bytes of modifier, then ``ModExType (4) | PacketType (4)``, the packet's real
   type. The one modifier defined, TimestampOffsetNano (type 0, a ``UI24`` of at least 3
   bytes), moves the packet by whole milliseconds of it as FFmpeg does: an offset within
   the spec (< 1 ms) changes nothing at our millisecond resolution. Other modifiers are
   skipped by their size. At most :data:`MAX_MOD_EX` are taken.
2. A command frame (frame type 5) of any packet type but Metadata: one command byte, no
   picture, no FourCC: nothing to take.
3. Multitrack (packet type 6) is refused with 415, naming the FourCC that follows.
4. The FourCC: ``avc1`` (H.264), ``hvc1`` (HEVC), ``av01`` (AV1), ``vp09`` (VP9); anything
   else is refused with 415.
5. By packet type: SequenceStart (0) carries the configuration record (``avcC``, ``hvcC``,
   ``av1C``, ``vpcC``) as it stands in MP4; CodedFrames (1) a frame, behind an ``SI24``
   composition offset for ``avc1``/``hvc1`` only; CodedFramesX (3) a frame with offset 0;
   SequenceEnd (2) nothing; Metadata (4) AMF ``colorInfo``, not needed to segment, skipped
   unread. MPEG2TSSequenceStart (5), AV1 as an MPEG-2 TS descriptor in place of ``av1C``, is
   refused with 415: no publisher we know sends it, and skipping it would leave the track
   without a configuration, to fail later and say less. Other packet types are reserved.

A frame's data is what FLV carries: length-prefixed NAL units for H.264 and HEVC,
low-overhead OBUs (one temporal unit) for AV1, the frame for VP9. Its keyframe flag is frame
type 1. An E-RTMP audio body (legacy sound format 9) is refused with 415 naming its FourCC:
FFmpeg writes AAC the legacy way. Every field is checked against the bytes left; a
short body is a :class:`~lpstream.errors.RemoteProtocolError` saying which field it cut.
"""

from __future__ import annotations

from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind

__all__ = [
    "MAX_MOD_EX",
    "VIDEO_FOURCCS",
    "enhanced_audio_events",
    "enhanced_video_events",
]

VIDEO_FOURCCS = {b"avc1": "h264", b"hvc1": "hevc", b"av01": "av1", b"vp09": "vp9"}
"""The video FourCCs taken, and the FFmpeg codec name each becomes."""
MAX_MOD_EX = 8
"""Most ModEx modifiers one body may carry: the spec defines one kind; a body of thousands of
tiny modifiers would only cost parse time."""

_ACCEPTED = "accepted: avc1 (H.264), hvc1 (HEVC), av01 (AV1), vp09 (VP9)"
_WITH_COMPOSITION_TIME = frozenset({b"avc1", b"hvc1"})

_KEY_FRAME = 1
_COMMAND_FRAME = 5
_FRAME_TYPES = frozenset({1, 2, 3, 4, 5})

_SEQUENCE_START = 0
_CODED_FRAMES = 1
_SEQUENCE_END = 2
_CODED_FRAMES_X = 3
_METADATA = 4
_MPEG2TS_SEQUENCE_START = 5
_VIDEO_MULTITRACK = 6
_MOD_EX = 7
_AUDIO_MULTITRACK = 5

_TIMESTAMP_OFFSET_NANO = 0
_NANOS_PER_MS = 1_000_000


class _Body:
    """A body read front to back; every read checks what is left."""

    def __init__(self, payload: bytes, what: str) -> None:
        self._payload = payload
        self._pos = 0
        self._what = what

    def take(self, size: int, field: str) -> bytes:
        left = len(self._payload) - self._pos
        if size > left:
            raise RemoteProtocolError(
                f"truncated {self._what}: {field} needs {size} bytes, {left} left"
            )
        self._pos += size
        return self._payload[self._pos - size : self._pos]

    def uint(self, size: int, field: str) -> int:
        return int.from_bytes(self.take(size, field), "big")

    def peek(self, size: int) -> bytes | None:
        """The next ``size`` bytes without taking them, or None if fewer are left."""
        chunk = self._payload[self._pos : self._pos + size]
        return chunk if len(chunk) == size else None

    def rest(self) -> bytes:
        rest = self._payload[self._pos :]
        self._pos = len(self._payload)
        return rest


def enhanced_video_events(timestamp: int, payload: bytes) -> list[MediaEvent]:
    """The events of one E-RTMP video body (``timestamp`` in ms is its decode time).

    Raises:
        RemoteProtocolError: 415 for what is not taken (a FourCC, multitrack, AV1's MPEG-2 TS
            form), 400 for a body that breaks the spec or ends early.
    """
    body = _Body(payload, "enhanced RTMP video message")
    head = body.uint(1, "the header")
    frame_type, packet_type = (head >> 4) & 0x07, head & 0x0F
    packet_type, shift = _mod_ex(body, packet_type)
    if packet_type != _METADATA and frame_type not in _FRAME_TYPES:
        raise RemoteProtocolError(f"reserved video frame type {frame_type} (enhanced RTMP)")
    if frame_type == _COMMAND_FRAME and packet_type != _METADATA:
        return []
    if packet_type == _VIDEO_MULTITRACK:
        body.take(1, "the multitrack type")
        raise _multitrack_refusal("video", body.peek(4))
    fourcc = body.take(4, "the FourCC")
    codec = VIDEO_FOURCCS.get(fourcc)
    if codec is None:
        raise RemoteProtocolError(
            f"unsupported video codec {_shown(fourcc)} (enhanced RTMP); {_ACCEPTED}", code=415
        )
    if packet_type == _SEQUENCE_START:
        record = body.rest()
        if not record:
            raise RemoteProtocolError(f"empty {_shown(fourcc)} sequence start")
        return [CodecConfig(kind=TrackKind.VIDEO, codec=codec, data=record)]
    if packet_type in (_CODED_FRAMES, _CODED_FRAMES_X):
        offset = 0
        if packet_type == _CODED_FRAMES and fourcc in _WITH_COMPOSITION_TIME:
            offset = int.from_bytes(body.take(3, "the composition time"), "big", signed=True)
        frame = body.rest()
        if not frame:
            return []
        dts = timestamp + shift
        keyframe = frame_type == _KEY_FRAME
        return [
            MediaPacket(
                kind=TrackKind.VIDEO, dts=dts, pts=dts + offset, keyframe=keyframe, data=frame
            )
        ]
    if packet_type in (_SEQUENCE_END, _METADATA):
        return []
    if packet_type == _MPEG2TS_SEQUENCE_START:
        raise RemoteProtocolError(
            f"{_shown(fourcc)} in the MPEG-2 TS descriptor form (packet type 5) is not "
            "supported; send a SequenceStart with the configuration record",
            code=415,
        )
    raise RemoteProtocolError(f"reserved enhanced RTMP video packet type {packet_type}")


def enhanced_audio_events(timestamp: int, payload: bytes) -> list[MediaEvent]:
    """Refuses an E-RTMP audio body, naming its FourCC (the signature matches the others).

    Raises:
        RemoteProtocolError: always; 415 once the FourCC is read, 400 if the body ends first.
    """
    del timestamp
    body = _Body(payload, "enhanced RTMP audio message")
    packet_type, _ = _mod_ex(body, body.uint(1, "the header") & 0x0F)
    if packet_type == _AUDIO_MULTITRACK:
        body.take(1, "the multitrack type")
        raise _multitrack_refusal("audio", body.peek(4))
    fourcc = body.take(4, "the FourCC")
    raise RemoteProtocolError(
        f"unsupported audio codec {_shown(fourcc)} (enhanced RTMP); only AAC in the legacy "
        "form (sound format 10) is accepted",
        code=415,
    )


def _mod_ex(body: _Body, packet_type: int) -> tuple[int, int]:
    """Reads the ModEx modifiers ahead of the packet: its real type, and the milliseconds
    its timestamp moves by."""
    shift = 0
    count = 0
    while packet_type == _MOD_EX:
        count += 1
        if count > MAX_MOD_EX:
            raise RemoteProtocolError(f"more than {MAX_MOD_EX} ModEx modifiers in one message")
        size = body.uint(1, "the ModEx size") + 1
        if size == 256:
            size = body.uint(2, "the ModEx 16-bit size") + 1
        data = body.take(size, "the ModEx data")
        kinds = body.uint(1, "the ModEx type")
        mod_type, packet_type = kinds >> 4, kinds & 0x0F
        if mod_type == _TIMESTAMP_OFFSET_NANO:
            if size < 3:
                raise RemoteProtocolError(f"ModEx TimestampOffsetNano of {size} bytes; it needs 3")
            shift += int.from_bytes(data[:3], "big") // _NANOS_PER_MS
    return packet_type, shift


def _multitrack_refusal(kind: str, fourcc: bytes | None) -> RemoteProtocolError:
    named = f" ({kind} {_shown(fourcc)})" if fourcc is not None else f" ({kind})"
    return RemoteProtocolError(
        f"multitrack E-RTMP is not supported{named}; publish a single track", code=415
    )


def _shown(fourcc: bytes) -> str:
    """A FourCC as a quoted string (unprintable bytes escaped)."""
    return repr(fourcc.decode("latin-1"))
