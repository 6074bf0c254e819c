"""AAC in ADTS frames, as MPEG-TS carries it, cut into raw frames (sans-IO).

How this works: each ADTS frame is a 7-byte header (9 with a CRC, parsed by
:mod:`lpstream.media.adts`) and one raw AAC frame of 1024 samples. The header holds what a
decoder is told out of band elsewhere, which :class:`AdtsReader` hands on as an
``AudioSpecificConfig``, the form ``CodecConfig`` carries. PES packets normally hold whole
frames, but a frame may run on into the next PES: what is left of one is kept (at most a
frame's worth) and finished by the next. Bytes that do not start a valid header are skipped
to the next sync word and counted.

Times are 90 kHz: a PES's PTS belongs to the first frame that starts in it, and each frame
after that is 1024 samples later, counted in samples so that no rounding adds up.
Refused with code 415: a channel configuration of 0 (the layout in a program config element)
and several raw blocks in one frame, which the gateway's AAC path does not take.
"""

from __future__ import annotations

import attrs

from lpstream.errors import RemoteProtocolError
from lpstream.media.adts import ADTS_MIN_HEADER, ADTS_SAMPLE_RATES, parse_adts_header

__all__ = ["SAMPLES_PER_FRAME", "AacFrame", "AdtsReader"]

SAMPLES_PER_FRAME = 1024
_MIN_HEADER = ADTS_MIN_HEADER
_MAX_FRAME = (1 << 13) - 1
"""The largest frame ``frame_length`` (13 bits) can state."""


@attrs.frozen(kw_only=True)
class AacFrame:
    """One raw AAC frame and what decodes it."""

    time: int
    """Its presentation time, 90 kHz (on the PES timeline)."""
    config: bytes
    """The AudioSpecificConfig its header states."""
    data: bytes
    """The raw frame, header removed."""


def _header(data: bytes | bytearray, at: int) -> tuple[int, int, bytes] | None:
    """(header size, frame size, AudioSpecificConfig) of a valid header at ``at``; None if
    the bytes there do not start one.

    Raises:
        RemoteProtocolError: 415, a valid header of a kind the gateway does not take.
    """
    header = parse_adts_header(data, at)
    if header is None:
        return None
    if header.channels == 0:
        raise RemoteProtocolError(
            "AAC with channel configuration 0 (a program config element) is not supported",
            code=415,
        )
    if header.raw_blocks > 1:
        raise RemoteProtocolError(
            "AAC with several raw data blocks in one ADTS frame is not supported", code=415
        )
    return header.header_size, header.frame_size, header.audio_specific_config


def _sample_rate(config: bytes) -> int:
    return ADTS_SAMPLE_RATES[(config[0] & 0x07) << 1 | config[1] >> 7]


@attrs.define
class AdtsReader:
    """Feed one audio PES payload at a time with its PTS; get its whole AAC frames."""

    skipped: int = 0
    """Bytes skipped because they started no valid ADTS header (damage, lost packets)."""
    _carry: bytearray = attrs.Factory(bytearray)
    """The start of a frame that runs on into the next PES."""
    _carry_pts: int | None = None
    """The PTS that applies to the frame ``_carry`` starts, if one does."""
    _base: int | None = None
    """The time (90 kHz) the sample count runs from."""
    _samples: int = 0
    """Samples since ``_base``."""
    _rate: int = 48000

    def feed(self, payload: bytes, pts: int | None) -> list[AacFrame]:
        """The frames that ``payload`` (the body of one PES, PTS ``pts`` in 90 kHz, None if
        it had none) completed.

        Raises:
            RemoteProtocolError: 415, AAC of a kind the gateway does not take.
        """
        data = self._carry + payload
        # Where a PTS applies from: the first frame that starts at or after its offset.
        marks = [(0, self._carry_pts)] if self._carry_pts is not None else []
        if pts is not None:
            marks.append((len(self._carry), pts))
        self._carry = bytearray()
        frames: list[AacFrame] = []
        pos = 0
        while pos < len(data):
            found = _header(data, pos)
            if found is None:
                if len(data) - pos < _MIN_HEADER and data[pos] == 0xFF:
                    break  # a header cut short: wait for the rest
                self.skipped += 1
                pos += 1
                continue
            header_size, frame_size, config = found
            if pos + frame_size > len(data):
                break
            rebase = None
            while marks and marks[0][0] <= pos:
                rebase = marks.pop(0)[1]
            rate = _sample_rate(config)
            if rebase is not None:
                self._base, self._samples = rebase, 0
            elif rate != self._rate and self._base is not None:
                # Keep the time reached, count the new rate's samples from there.
                self._base, self._samples = self._time(), 0
            self._rate = rate
            if self._base is not None:
                frames.append(
                    AacFrame(
                        time=self._time(),
                        config=config,
                        data=bytes(data[pos + header_size : pos + frame_size]),
                    )
                )
                self._samples += SAMPLES_PER_FRAME
            pos += frame_size
        rest = data[pos:]
        if len(rest) <= _MAX_FRAME:
            self._carry = rest
            self._carry_pts = marks[0][1] if marks else None
        else:
            self.skipped += len(rest)
            self._carry_pts = None
        return frames

    def reset(self) -> None:
        """Forgets a partial frame (the stream lost packets); times restart at the next PTS."""
        self.skipped += len(self._carry)
        self._carry = bytearray()
        self._carry_pts = None
        self._base = None
        self._samples = 0

    def _time(self) -> int:
        assert self._base is not None
        return self._base + self._samples * 90_000 // self._rate
