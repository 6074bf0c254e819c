"""Verification of results: the orchestrator signs what it returns, the gateway checks it.

How this works:

An orchestrator is paid for the pixels it says it encoded, so its claims must be checkable and
must be its own. After a job it signs a digest of the job's identity and of every rendition
(name, size in pixels, frames, pixel count and a hash of the bytes) with its Ethereum key, the
same EIP-191 personal signature the gateway's tickets use, and sends the 65 bytes in the
SUMMARY. The gateway then

1. recovers the signer from the digest of what it received and compares it with the address
   the orchestrator's tickets are made out to: a changed byte, a changed count, another
   segment's signature or another key all recover to a different address;
2. decodes every rendition (PyAV, blocking: run on a thread) and compares frames and pixels
   with the claims.

Either failure raises :class:`VerificationError`; the gateway suspends the orchestrator and
does not settle the job. Off-chain there are no keys: only the decode check runs.

The signature binds the claims to the orchestrator, so a dispute has evidence; the decode
check is what keeps a gateway from paying for pixels it did not get.
"""

from __future__ import annotations

import io
from collections.abc import Sequence

import av

from lpstream.errors import LpstreamError, MediaError
from lpstream.jobs import JobOutput
from lpstream.media.segment_format import segment_format
from lpstream.wire import Job
from payments.pm import (
    InvalidSignatureError,
    keccak256,
    personal_message_hash,
    recover_personal_signer,
    sign_hash,
    to_checksum_address,
)

__all__ = [
    "DIGEST_DOMAIN",
    "VerificationError",
    "count_pixels",
    "recover_rendition_signer",
    "rendition_digest",
    "sign_renditions",
    "verify_result",
]

DIGEST_DOMAIN = b"lpstream/renditions/v1"
"""Prefix of every digested message, so a rendition signature can mean nothing else."""


class VerificationError(LpstreamError):
    """A job's result failed verification; ``reason`` says how (and names the rendition)."""

    @property
    def reason(self) -> str:
        return str(self)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8")
    return len(raw).to_bytes(4, "big") + raw


def _u64(value: int) -> bytes:
    return value.to_bytes(8, "big")


def rendition_digest(job: Job, outputs: Sequence[JobOutput]) -> bytes:
    """The 32-byte keccak256 that an orchestrator signs for a job's renditions.

    The hashed message is, with ``u32``/``u64`` big-endian unsigned integers and
    ``text(s) = u32(len(utf8(s))) || utf8(s)``::

        "lpstream/renditions/v1"                       (22 ASCII bytes, DIGEST_DOMAIN)
        text(job.stream_id) || u64(job.seq) || text(job.session_id)
        u32(len(outputs))
        per rendition, in track order:
            text(name) || u64(width) || u64(height) || u64(frames) || u64(pixels)
            || keccak256(data)                          (32 bytes)

    Sizes and durations are left out: the data hash fixes the size, and nothing is paid by
    duration.

    Raises:
        OverflowError: a number is negative or does not fit 64 bits (the wire forbids both).
    """
    parts = [
        DIGEST_DOMAIN,
        _text(job.stream_id),
        _u64(job.seq),
        _text(job.session_id),
        len(outputs).to_bytes(4, "big"),
    ]
    for output in outputs:
        info = output.info
        parts += [
            _text(info.name),
            _u64(info.width),
            _u64(info.height),
            _u64(info.frames),
            _u64(info.pixels),
            keccak256(output.data),
        ]
    return keccak256(b"".join(parts))


def sign_renditions(private_key: bytes, job: Job, outputs: Sequence[JobOutput]) -> bytes:
    """The EIP-191 personal signature (65 bytes, low s, v 27/28) of :func:`rendition_digest`.

    ``functools.partial(sign_renditions, key)`` is a ``sign`` for :func:`lpstream.jobs.serve_job`.
    """
    return sign_hash(private_key, personal_message_hash(rendition_digest(job, outputs)))


def recover_rendition_signer(job: Job, outputs: Sequence[JobOutput], signature: bytes) -> str:
    """The checksummed address whose key made ``signature`` over these renditions.

    Any change to the job's identity or the renditions recovers a different address.

    Raises:
        VerificationError: the signature is empty, malformed or recovers no key.
    """
    if not signature:
        raise VerificationError("missing signature")
    try:
        return recover_personal_signer(rendition_digest(job, outputs), signature)
    except InvalidSignatureError as exc:
        raise VerificationError(f"malformed signature: {exc}") from None


def count_pixels(data: bytes) -> tuple[int, int]:
    """(frames, pixels) of the first video stream in MPEG-TS ``data``, by decoding it.

    Pixels are the sum of width x height over the decoded frames. Blocking: run it with
    ``trio.to_thread.run_sync``. Data without a video stream counts (0, 0).

    Raises:
        MediaError: the data cannot be demuxed or decoded.
    """
    frames = pixels = 0
    try:
        with av.open(io.BytesIO(data), mode="r", format=segment_format(data)) as container:
            if not container.streams.video:
                return 0, 0
            stream = container.streams.video[0]
            for packet in container.demux(stream):
                for frame in packet.decode():
                    if isinstance(frame, av.VideoFrame):
                        frames += 1
                        pixels += frame.width * frame.height
    except av.FFmpegError as exc:
        raise MediaError(f"cannot decode: {exc}") from None
    return frames, pixels


def verify_result(
    job: Job,
    outputs: Sequence[JobOutput],
    signature: bytes,
    *,
    expected_signer: str | None,
    check_pixels: bool = True,
) -> None:
    """Checks a job's result: the signature first (cheap), then each rendition's claims.

    Args:
        job: the job as sent.
        outputs: the renditions as received.
        signature: the SUMMARY's signature.
        expected_signer: the orchestrator's address; None off-chain, which skips the
            signature check.
        check_pixels: decode every rendition and compare frames and pixels with the claims
            (blocking: run the call on a thread).

    Raises:
        VerificationError: with one of the reasons ``missing signature``, ``malformed
            signature: …``, ``signature from 0x… not the orchestrator 0x…``, ``rendition X:
            undecodable: …``, ``rendition X: claims N pixels, decodes to M`` or ``rendition
            X: claims N frames, decodes to M``.
        ValueError: ``expected_signer`` is not an address.
    """
    if expected_signer is not None:
        expected = to_checksum_address(expected_signer)
        signer = recover_rendition_signer(job, outputs, signature)
        if signer != expected:
            raise VerificationError(f"signature from {signer} not the orchestrator {expected}")
    if not check_pixels:
        return
    for output in outputs:
        info = output.info
        try:
            frames, pixels = count_pixels(output.data)
        except MediaError as exc:
            raise VerificationError(f"rendition {info.name}: undecodable: {exc}") from None
        if pixels != info.pixels:
            raise VerificationError(
                f"rendition {info.name}: claims {info.pixels} pixels, decodes to {pixels}"
            )
        if frames != info.frames:
            raise VerificationError(
                f"rendition {info.name}: claims {info.frames} frames, decodes to {frames}"
            )
