"""Checks a WHIP or WHEP SDP offer before any WebRTC machinery sees it (sans-IO, no clock, no
sockets).

How this works:

* The offer is read as SDP text (RFC 8866): ``<type>=<value>`` lines, a session part, then one
  media section per ``m=`` line. Only what ingest depends on is checked; the full negotiation
  (ICE, DTLS roles, payload types, header extensions) is left to the WebRTC stack.
* A malformed offer (not text, no ``v=0``, a line that is not ``x=...``, an ``m=`` line that
  cannot be read, no ICE credentials or DTLS fingerprint, a media section without ``a=mid``,
  a BUNDLE group naming a section there is not) is a remote error with code 400. Every WebRTC
  offer names its sections and bundles only those (JSEP, RFC 8843); aiortc takes an offer that
  does otherwise but then fails to answer it or to close its connection.
* An offer that is well formed but carries media this node cannot ingest is refused with 415:
  the video section must offer H.264 with ``packetization-mode=1`` (the mode every WebRTC
  sender uses; H.264 is passed through to HLS without re-encoding, so no other video codec
  will do), and an audio section, if there is one, must offer Opus.
* At most one video and one audio section: WHIP publishes one stream, and simulcast is not
  supported here. Data channels are allowed and ignored.
* A WHEP (playback) offer is checked the same way, the other way round: its video section must
  receive (``recvonly`` or ``sendrecv``) and offer H.264 with ``packetization-mode=1``, the
  only video this node sends (passed through, never re-encoded per viewer). Its audio
  section, if any, is not a reason to refuse: one that receives Opus gets the stream's audio
  (when it has some), any other is answered ``inactive`` (:func:`read_playback_offer`).
"""

from __future__ import annotations

import attrs

from lpstream.errors import RemoteProtocolError

__all__ = [
    "MAX_OFFER_SIZE",
    "MediaSection",
    "OfferSummary",
    "PlaybackOffer",
    "check_offer",
    "check_playback_offer",
    "read_playback_offer",
]

MAX_OFFER_SIZE = 64 * 1024
"""Largest offer accepted, in bytes (real offers are a few KiB)."""
MAX_SECTIONS = 8
"""Most ``m=`` sections accepted."""

_SENDING = frozenset({"sendonly", "sendrecv"})
_RECEIVING = frozenset({"recvonly", "sendrecv"})
_DIRECTIONS = {"sendonly", "sendrecv", "recvonly", "inactive"}


@attrs.frozen(kw_only=True)
class MediaSection:
    """What one ``m=`` section of an offer says about its media."""

    kind: str
    """``audio``, ``video`` or ``application``."""
    codecs: tuple[str, ...]
    """Encoding names from its ``a=rtpmap`` lines, upper case, in offer order."""
    h264_packetization_modes: tuple[int, ...]
    """``packetization-mode`` of each H.264 payload type (0 when absent)."""
    direction: str
    """``sendonly``, ``sendrecv``, ``recvonly`` or ``inactive`` (``sendrecv`` when absent)."""


@attrs.frozen(kw_only=True)
class OfferSummary:
    """An offer that passed :func:`check_offer`."""

    video: MediaSection
    """The video section (it offers H.264 or VP8)."""
    video_codec: str = "h264"
    """What the answer takes: ``h264`` when offered (in ``packetization-mode=1``), else
    ``av1`` (the source passes through to HLS), else ``vp8``."""
    audio: MediaSection | None
    """The audio section (it offers Opus), if the publisher sends audio."""


@attrs.frozen(kw_only=True)
class PlaybackOffer:
    """A WHEP offer that passed :func:`read_playback_offer`."""

    video: MediaSection
    """The video section (it receives H.264)."""
    audio: MediaSection | None
    """The audio section if it receives Opus (the stream's audio can go there); None when
    the offer has no audio section or one this node cannot send to."""


def _bad(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(f"bad SDP offer: {message}", code=400)


def _unsupported(message: str) -> RemoteProtocolError:
    return RemoteProtocolError(message, code=415)


@attrs.define
class _Section:
    kind: str
    formats: list[str]
    rtpmap: dict[str, str] = attrs.Factory(dict)
    fmtp: dict[str, str] = attrs.Factory(dict)
    direction: str | None = None
    has_ice: bool = False
    has_fingerprint: bool = False
    mid: str = ""
    bundle: list[str] = attrs.Factory(list)
    """The media sections an ``a=group:BUNDLE`` names (on the session part)."""


def _fmtp_params(text: str) -> dict[str, str]:
    params: dict[str, str] = {}
    for item in text.split(";"):
        key, sep, value = item.strip().partition("=")
        if sep:
            params[key.strip().lower()] = value.strip()
    return params


def _parse(text: str) -> tuple[_Section, list[_Section]]:
    lines = [line for line in text.replace("\r\n", "\n").split("\n") if line.strip()]
    if not lines or lines[0].strip() != "v=0":
        raise _bad("it must start with 'v=0'")
    session = _Section(kind="session", formats=[])
    sections: list[_Section] = []
    current = session
    for number, line in enumerate(lines, start=1):
        if len(line) < 2 or line[1] != "=" or not line[0].isalpha():
            raise _bad(f"line {number} is not '<type>=<value>'")
        kind, value = line[0], line[2:].strip()
        if kind == "m":
            parts = value.split()
            if len(parts) < 4 or not parts[1].split("/")[0].isdigit():
                raise _bad(f"line {number}: cannot read the m= line {value!r}")
            current = _Section(kind=parts[0].lower(), formats=parts[3:])
            sections.append(current)
            if len(sections) > MAX_SECTIONS:
                raise _bad(f"more than {MAX_SECTIONS} media sections")
        elif kind == "a":
            name, _, arg = value.partition(":")
            name = name.lower()
            if name == "rtpmap":
                pt, _, encoding = arg.partition(" ")
                current.rtpmap[pt.strip()] = encoding.split("/")[0].strip().upper()
            elif name == "fmtp":
                pt, _, params = arg.partition(" ")
                current.fmtp[pt.strip()] = params
            elif name in _DIRECTIONS:
                current.direction = name
            elif name in ("ice-ufrag", "ice-pwd"):
                current.has_ice = True
            elif name == "fingerprint":
                current.has_fingerprint = True
            elif name == "mid":
                current.mid = arg.strip()
            elif name == "group" and arg.upper().startswith("BUNDLE"):
                current.bundle += arg.split()[1:]
    return session, sections


def _packetization_mode(text: str) -> int:
    """A ``packetization-mode`` value; -1 for anything but a few ASCII digits (``str.isdigit``
    also takes ``'²'``, which ``int`` refuses, and ``int`` refuses past 4300 digits)."""
    return int(text) if text.isascii() and text.isdigit() and len(text) <= 9 else -1


def _summarize(section: _Section) -> MediaSection:
    codecs = tuple(section.rtpmap[f] for f in section.formats if f in section.rtpmap)
    modes = []
    for fmt in section.formats:
        if section.rtpmap.get(fmt) == "H264":
            params = _fmtp_params(section.fmtp.get(fmt, ""))
            modes.append(_packetization_mode(params.get("packetization-mode", "0")))
    return MediaSection(
        kind=section.kind,
        codecs=codecs,
        h264_packetization_modes=tuple(modes),
        direction=section.direction or "sendrecv",
    )


@attrs.frozen
class _Read:
    """What the checks read of an offer."""

    videos: list[MediaSection]
    audios: list[MediaSection]
    unbundled: list[str]
    """Sections a BUNDLE group names that the offer does not have."""

    def check_bundle(self) -> None:
        """Refuses the offer if a BUNDLE group names a section it does not have (checked last:
        an offer without the media this node needs is told that first)."""
        if self.unbundled:
            raise _bad(f"a=group:BUNDLE names {self.unbundled!r}, which no media section is")


def _sections(data: str | bytes) -> _Read:
    """The video and audio sections of a well-formed offer (at most one of each)."""
    if len(data) > MAX_OFFER_SIZE:
        raise RemoteProtocolError(f"SDP offer over {MAX_OFFER_SIZE} bytes", code=413)
    if isinstance(data, bytes):
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            raise _bad("it is not UTF-8 text") from None
    else:
        text = data
    session, sections = _parse(text)
    for section in sections:
        if not (section.has_ice or session.has_ice):
            raise _bad(f"the {section.kind} section has no a=ice-ufrag/a=ice-pwd")
        if not (section.has_fingerprint or session.has_fingerprint):
            raise _bad(f"the {section.kind} section has no DTLS a=fingerprint")
        if not section.mid:
            raise _bad(f"the {section.kind} section has no a=mid")
    videos = [_summarize(s) for s in sections if s.kind == "video"]
    audios = [_summarize(s) for s in sections if s.kind == "audio"]
    if len(videos) > 1 or len(audios) > 1:
        raise _bad("at most one video and one audio section (simulcast is not supported)")
    mids = {section.mid for section in sections}
    return _Read(videos, audios, sorted(set(session.bundle) - mids))


@attrs.frozen(kw_only=True)
class _VideoRule:
    """What one endpoint needs of an offer's video section, and how it says so."""

    directions: frozenset[str]
    """The directions the section may have (seen from the offerer)."""
    no_video: str
    """Ends the 415 reason for an offer without video."""
    wrong_direction: str
    """Ends the 400 reason for a section facing the other way."""
    takes: str
    """Ends the 415 reason for video without H.264 ``packetization-mode=1``."""


_PUBLISH = _VideoRule(
    directions=_SENDING,
    no_video="WHIP ingest needs H.264 or VP8 video",
    wrong_direction="a publisher must send",
    takes="this node ingests H.264 (packetization-mode=1), AV1 or VP8 video and optional Opus "
    "audio",
)
_PLAYBACK = _VideoRule(
    directions=_RECEIVING,
    no_video="WHEP playback sends H.264 video",
    wrong_direction="a viewer must receive",
    takes="this node sends the stream's H.264 as it is, without re-encoding",
)


def _offered(section: MediaSection) -> str:
    return ", ".join(dict.fromkeys(section.codecs)) or "none"


def _h264_video(
    videos: list[MediaSection], rule: _VideoRule, *, also: tuple[str, ...] = ()
) -> MediaSection:
    """The offer's video section, if it faces the right way and offers H.264 in
    ``packetization-mode=1`` (or one of the codecs ``also`` names, upper case)."""
    if not videos:
        raise _unsupported(f"the offer has no video; {rule.no_video}")
    video = videos[0]
    if video.direction not in rule.directions:
        raise _bad(f"the video section is {video.direction}; {rule.wrong_direction}")
    if 1 not in video.h264_packetization_modes and not set(also) & set(video.codecs):
        wanted = " or ".join(["H.264 video with packetization-mode=1", *also])
        raise _unsupported(f"the offer has no {wanted} (offered: {_offered(video)}); {rule.takes}")
    return video


def check_offer(data: str | bytes) -> OfferSummary:
    """Reads a WHIP offer and checks that this node can ingest what it offers.

    Raises:
        lpstream.errors.RemoteProtocolError: code 400 for a malformed offer, 413 for one over
            :data:`MAX_OFFER_SIZE`, 415 for one without H.264, AV1 or VP8 video or with audio
            but no Opus; the message says which.
    """
    read = _sections(data)
    video = _h264_video(read.videos, _PUBLISH, also=("AV1", "VP8"))
    audio = read.audios[0] if read.audios else None
    if audio is not None:
        if audio.direction not in _SENDING:
            audio = None
        elif "OPUS" not in audio.codecs:
            raise _unsupported(
                f"the offer's audio has no Opus (offered: {_offered(audio)}); "
                "this node ingests Opus audio (sent on as AAC) or no audio"
            )
    read.check_bundle()
    if 1 in video.h264_packetization_modes:
        codec = "h264"
    else:
        codec = "av1" if "AV1" in video.codecs else "vp8"
    return OfferSummary(video=video, audio=audio, video_codec=codec)


def check_playback_offer(data: str | bytes) -> MediaSection:
    """Reads a WHEP offer and checks that this node can send what it asks for; returns its
    video section.

    Raises:
        lpstream.errors.RemoteProtocolError: code 400 for a malformed offer or one whose video
            does not receive, 413 for one over :data:`MAX_OFFER_SIZE`, 415 for one without
            H.264 (``packetization-mode=1``) video; the message says which.
    """
    return read_playback_offer(data).video


def read_playback_offer(data: str | bytes) -> PlaybackOffer:
    """Reads a WHEP offer, checks that this node can send what it asks for, and says whether
    it can take the stream's audio.

    Raises:
        lpstream.errors.RemoteProtocolError: as :func:`check_playback_offer`.
    """
    read = _sections(data)
    video = _h264_video(read.videos, _PLAYBACK)
    audio = read.audios[0] if read.audios else None
    if audio is not None and (audio.direction not in _RECEIVING or "OPUS" not in audio.codecs):
        audio = None
    read.check_bundle()
    return PlaybackOffer(video=video, audio=audio)
