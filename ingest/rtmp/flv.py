"""The media an RTMP publisher sends, turned into :mod:`lpstream.media` values (sans-IO).

How this works
--------------
RTMP audio, video and data messages carry the bodies of FLV tags, and an aggregate message
carries whole FLV tags back to back. Each function here takes one body and returns the
events it holds (none, one, or for an aggregate several), or raises
:class:`~lpstream.errors.RemoteProtocolError` for what a publish server cannot take:

- video: a 1-byte header (frame type << 4 | codec id), then for AVC (codec 7) a packet type,
  a 3-byte signed composition offset and the data. Packet type 0 is the sequence header
  (``AVCDecoderConfigurationRecord``), 1 a coded frame, 2 the end of the sequence. Video info
  frames (frame type 5) carry no picture and are skipped. Any other legacy codec is refused
  with code 415. With the high bit set the body is Enhanced RTMP (a FourCC names the codec:
  H.264, HEVC, AV1 or VP9), read by :mod:`.enhanced`.
- audio: a 1-byte header (codec id << 4 | rate, size, channels), then for AAC (codec 10) a
  packet type (0: ``AudioSpecificConfig``, 1: a raw frame) and the data. Any other codec,
  Enhanced RTMP audio (sound format 9, a FourCC follows) among them, is refused with code
  415.
- data: ``onMetaData`` (possibly behind ``@setDataFrame``) becomes :class:`StreamMetadata`.
- aggregate: FLV tags, each followed by a 4-byte back pointer; the tags' times are relative
  to the first tag's, which stands at the message's timestamp.

Which connection state media is taken in is the connection's business, not this module's.
"""

from __future__ import annotations

from lpstream.errors import RemoteProtocolError
from lpstream.media import CodecConfig, MediaEvent, MediaPacket, StreamMetadata, TrackKind

from . import amf0
from .amf0 import AmfValue
from .chunk import MessageType
from .enhanced import enhanced_audio_events, enhanced_video_events

__all__ = ["aggregate_events", "audio_events", "metadata_events", "video_events"]

_VIDEO_EX_HEADER = 0x80
_VIDEO_CODEC_AVC = 7
_VIDEO_FRAME_KEY = 1
_VIDEO_FRAME_INFO = 5
_AUDIO_CODEC_AAC = 10
_AUDIO_EX_HEADER = 9
_FLV_TAG_HEADER = 11

_SEQUENCE_HEADER = 0
_CODED_FRAME = 1
_AVC_END_OF_SEQUENCE = 2


def video_events(timestamp: int, payload: bytes) -> list[MediaEvent]:
    """The events of one video message (``timestamp`` in ms is its decode time)."""
    if not payload:
        return []
    head = payload[0]
    if head & _VIDEO_EX_HEADER:
        return enhanced_video_events(timestamp, payload)
    frame_type, codec = head >> 4, head & 0x0F
    if frame_type == _VIDEO_FRAME_INFO:
        return []
    if codec != _VIDEO_CODEC_AVC:
        raise RemoteProtocolError(
            f"unsupported video codec id {codec}; only 7 (H.264) is accepted (HEVC, AV1 and "
            "VP9 come over enhanced RTMP)",
            code=415,
        )
    if len(payload) < 5:
        raise RemoteProtocolError(f"AVC video message of {len(payload)} bytes (header is 5)")
    offset = int.from_bytes(payload[2:5], "big", signed=True)
    return _coded(
        TrackKind.VIDEO,
        "h264",
        "AVC",
        payload[1],
        payload[5:],
        dts=timestamp,
        pts=timestamp + offset,
        keyframe=frame_type == _VIDEO_FRAME_KEY,
        ignored=_AVC_END_OF_SEQUENCE,
    )


def audio_events(timestamp: int, payload: bytes) -> list[MediaEvent]:
    """The events of one audio message (``timestamp`` in ms)."""
    if not payload:
        return []
    codec = payload[0] >> 4
    if codec == _AUDIO_EX_HEADER:
        return enhanced_audio_events(timestamp, payload)
    if codec != _AUDIO_CODEC_AAC:
        raise RemoteProtocolError(
            f"unsupported audio codec id {codec}; only 10 (AAC) is accepted", code=415
        )
    if len(payload) < 2:
        raise RemoteProtocolError("AAC audio message without a packet type")
    return _coded(
        TrackKind.AUDIO,
        "aac",
        "AAC",
        payload[1],
        payload[2:],
        dts=timestamp,
        pts=timestamp,
        keyframe=True,
    )


def _coded(
    kind: TrackKind,
    codec: str,
    label: str,
    packet_type: int,
    data: bytes,
    *,
    dts: int,
    pts: int,
    keyframe: bool,
    ignored: int | None = None,
) -> list[MediaEvent]:
    """AVC and AAC bodies alike: packet type 0 is the codec's configuration, 1 a frame."""
    if packet_type == _SEQUENCE_HEADER:
        if not data:
            raise RemoteProtocolError(f"empty {label} sequence header")
        return [CodecConfig(kind=kind, codec=codec, data=data)]
    if packet_type == _CODED_FRAME:
        if not data:
            return []
        return [MediaPacket(kind=kind, dts=dts, pts=pts, keyframe=keyframe, data=data)]
    if packet_type == ignored:
        return []
    raise RemoteProtocolError(f"unknown {label} packet type {packet_type}")


def metadata_events(values: list[AmfValue]) -> list[MediaEvent]:
    """The events of one data message, already decoded from AMF0."""
    if values and values[0] == "@setDataFrame":
        values = values[1:]
    if len(values) >= 2 and values[0] == "onMetaData" and isinstance(values[1], dict):
        return [StreamMetadata(values=dict(values[1]))]
    return []


def aggregate_events(timestamp: int, payload: bytes) -> list[MediaEvent]:
    """The events of the FLV tags in one aggregate message, in order."""
    events: list[MediaEvent] = []
    pos = 0
    first: int | None = None
    while pos < len(payload):
        if pos + _FLV_TAG_HEADER > len(payload):
            raise RemoteProtocolError("truncated tag header in aggregate message")
        tag_type = payload[pos]
        size = int.from_bytes(payload[pos + 1 : pos + 4], "big")
        tag_time = int.from_bytes(payload[pos + 4 : pos + 7], "big") | (payload[pos + 7] << 24)
        body_end = pos + _FLV_TAG_HEADER + size
        if body_end + 4 > len(payload):
            raise RemoteProtocolError("truncated tag in aggregate message")
        body = payload[pos + _FLV_TAG_HEADER : body_end]
        if first is None:
            first = tag_time
        when = timestamp + tag_time - first
        if tag_type == MessageType.VIDEO:
            events += video_events(when, body)
        elif tag_type == MessageType.AUDIO:
            events += audio_events(when, body)
        elif tag_type == MessageType.DATA_AMF0:
            events += metadata_events(amf0.decode_all(body))
        pos = body_end + 4  # skip the back pointer
    return events
