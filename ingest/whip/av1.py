"""Turns the AV1 RTP packets of one WebRTC frame into ingest ``MediaEvent``s.

How this works
--------------
* AV1 over RTP (the AOM "RTP Payload Format For AV1") puts a temporal unit's OBUs in the
  payloads of the packets that share its RTP timestamp. Each payload opens with an
  aggregation header ``Z Y W(2) N - - -``: Z, the first element continues an OBU the previous
  packet began; Y, the last element goes on in the next packet; W, how many elements the
  payload holds (0: any number, each behind a LEB128 length; 1 to 3: all but the last behind
  a length); N, the packet starts a new coded video sequence (a keyframe and its sequence
  header). aiortc joins a frame's payloads into one, so the receiver keeps each payload's
  boundary by a 2-byte length in front of it (:func:`framed_payload`); :func:`temporal_unit`
  splits them back and rebuilds the OBUs.
* The OBUs in RTP usually have no size field (the packet ends them); MP4 samples and the
  segmenter's muxer want low-overhead AV1, every OBU with its size: each is rewritten with
  ``obu_has_size_field`` set. Temporal delimiters, tile lists and padding are dropped (RTP
  leaves the first out anyway; MP4 samples carry none of them).
* :class:`Av1Track` makes the configuration record (av1C) from each new sequence header,
  lets frames through from a keyframe on (:class:`~.keyframes.KeyframeGate`), and times them.

Sans-IO; a malformed payload raises ``ValueError`` and the frame is dropped.
"""

from __future__ import annotations

import attrs

from lpstream.media import CodecConfig, MediaEvent, MediaPacket, TrackKind
from lpstream.media.av1 import OBU_SEQUENCE_HEADER, av1_config_record, leb128, read_leb128

from .keyframes import GatedTrack

__all__ = ["MAX_OBUS", "Av1Track", "TemporalUnit", "framed_payload", "temporal_unit"]

MAX_OBUS = 256
"""Most OBUs one temporal unit may hold (a frame of many tiles has a few dozen)."""

_Z, _Y, _N = 0x80, 0x40, 0x08
_DROPPED = {2, 8, 15}  # temporal delimiter, tile list, padding
_EXTENSION, _HAS_SIZE = 0x04, 0x02


def framed_payload(payload: bytes) -> bytes:
    """One RTP payload behind its 2-byte length, so a frame's payloads can be joined."""
    if len(payload) > 0xFFFF:
        raise ValueError(f"an RTP payload of {len(payload)} bytes")
    return len(payload).to_bytes(2, "big") + payload


@attrs.frozen(kw_only=True)
class TemporalUnit:
    """One frame's OBUs in low-overhead form."""

    data: bytes
    """The OBUs, each with its size field."""
    new_sequence: bool
    """A packet of it had N set: it starts a coded video sequence (a keyframe)."""
    sequence_header: bytes | None
    """Its sequence header OBU (header, size, payload), if it has one."""


def _elements(payload: bytes) -> tuple[int, list[bytes]]:
    """A payload's aggregation header and its OBU elements (or fragments of them)."""
    if not payload:
        raise ValueError("an empty AV1 payload")
    header = payload[0]
    count = (header >> 4) & 0x03
    elements: list[bytes] = []
    offset = 1
    while offset < len(payload):
        if count and len(elements) == count - 1:
            elements.append(payload[offset:])  # the last element: no length
            break
        size, offset = read_leb128(payload, offset)
        if offset + size > len(payload):
            raise ValueError("an OBU element runs past its payload")
        elements.append(payload[offset : offset + size])
        offset += size
    if count and len(elements) != count:
        raise ValueError(f"the aggregation header says {count} elements, the payload has fewer")
    return header, elements


def _with_size(obu: bytes) -> tuple[int, bytes]:
    """An OBU's type and the OBU with its size field set (rewritten if it had none)."""
    header = obu[0]
    if header & 0x80:
        raise ValueError("OBU forbidden bit is set")
    head = 2 if header & _EXTENSION else 1
    if len(obu) < head:
        raise ValueError("an OBU header ends early")
    kind = (header >> 3) & 0x0F
    if header & _HAS_SIZE:
        size, start = read_leb128(obu, head)
        if start + size > len(obu):
            raise ValueError("an OBU runs past its element")
        return kind, obu[: start + size]
    body = obu[head:]
    return kind, bytes([header | _HAS_SIZE]) + obu[1:head] + leb128(len(body)) + body


def temporal_unit(frame: bytes) -> TemporalUnit:
    """The temporal unit in a frame of payloads joined as :func:`framed_payload` makes them.

    Raises:
        ValueError: a payload or OBU is malformed, a fragment is not continued, or there are
            more than :data:`MAX_OBUS` OBUs.
    """
    offset = 0
    obus: list[bytes] = []
    pending: bytearray | None = None
    new_sequence = False
    while offset < len(frame):
        if offset + 2 > len(frame):
            raise ValueError("a payload length ends early")
        size = int.from_bytes(frame[offset : offset + 2], "big")
        payload = frame[offset + 2 : offset + 2 + size]
        if len(payload) != size:
            raise ValueError("a payload runs past the frame")
        offset += 2 + size
        header, elements = _elements(payload)
        new_sequence = new_sequence or bool(header & _N)
        for index, element in enumerate(elements):
            continues = index == 0 and header & _Z
            if continues:
                if pending is None:
                    continue  # the packet with its start was lost: the OBU is dropped
                pending += element
            else:
                if pending is not None:
                    raise ValueError("an OBU fragment is not continued")
                pending = bytearray(element)
            if index == len(elements) - 1 and header & _Y:
                continue  # goes on in the next packet
            obus.append(bytes(pending))
            pending = None
            if len(obus) > MAX_OBUS:
                raise ValueError(f"more than {MAX_OBUS} OBUs in a temporal unit")
    if pending is not None:
        raise ValueError("the frame ends inside an OBU")
    out = bytearray()
    sequence_header = None
    for obu in obus:
        if not obu:
            continue
        kind, whole = _with_size(obu)
        if kind in _DROPPED:
            continue
        if kind == OBU_SEQUENCE_HEADER and sequence_header is None:
            sequence_header = whole
        out += whole
    return TemporalUnit(data=bytes(out), new_sequence=new_sequence, sequence_header=sequence_header)


@attrs.define
class Av1Track(GatedTrack):
    """AV1 frames (payloads joined by :func:`framed_payload`) in, ``CodecConfig`` (av1C) and
    low-overhead ``MediaPacket``s out."""

    _config: bytes | None = None

    def feed(self, frame: bytes, timestamp_ms: int) -> list[MediaEvent]:
        """Takes one frame's payloads and its time in ms; returns the events it makes."""
        try:
            unit = temporal_unit(frame)
            config = (
                None if unit.sequence_header is None else av1_config_record(unit.sequence_header)
            )
        except ValueError:
            self._gate.drop()
            return []
        if not unit.data:
            return []
        events: list[MediaEvent] = []
        keyframe = unit.new_sequence and config is not None
        if config is not None and config != self._config:
            self._config = config
            events.append(CodecConfig(kind=TrackKind.VIDEO, codec="av1", data=config))
        if not self._gate.passes(keyframe=keyframe and self._config is not None):
            return []
        dts = self._gate.dts(timestamp_ms)
        events.append(
            MediaPacket(kind=TrackKind.VIDEO, dts=dts, pts=dts, keyframe=keyframe, data=unit.data)
        )
        return events
