"""Orchestrators sign their renditions' claims; gateways recover the signer and decode to check."""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pytest
import trio
import trio.testing

from lpstream.errors import LocalProtocolError, MediaError, RemoteProtocolError
from lpstream.jobs import JobOutput, ResultSink, request_job, serve_job
from lpstream.trickle import SegmentBuffer
from lpstream.verification import (
    VerificationError,
    count_pixels,
    recover_rendition_signer,
    rendition_digest,
    sign_renditions,
    verify_result,
)
from lpstream.wire import Job, RenditionInfo, ResultSummary, decode_message, encode_message
from lpstream.wire.framing import Frame, FrameDecoder, FrameType, encode_frame
from payments.pm import address_of, keccak256
from tests.mediatools import make_clip

ORCH_KEY = keccak256(b"orchestrator")
ORCH = address_of(ORCH_KEY)
OTHER_KEY = keccak256(b"someone else")
JOB = Job(stream_id="live-1", seq=7, duration_ms=1000, session_id="sess-1")
PIXELS = 30 * 320 * 240


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    path = tmp_path_factory.mktemp("v") / "r.ts"
    return make_clip(path, seconds=1, size="320x240", gop=30, fmt="mpegts").read_bytes()


def output(name: str, data: bytes) -> JobOutput:
    info = RenditionInfo(
        name=name, width=320, height=240, pixels=PIXELS, frames=30, size=len(data),
        duration_ms=1000,
    )  # fmt: skip
    return JobOutput(info=info, data=data)


@pytest.fixture(scope="module")
def outputs(clip: bytes) -> list[JobOutput]:
    return [output("240p", clip), output("source", clip)]


def test_the_digest_is_the_documented_byte_layout() -> None:
    data = b"\x47" * 188
    outs = [output("240p", data)]

    def text(s: str) -> bytes:
        return struct.pack(">I", len(s)) + s.encode()

    message = (
        b"lpstream/renditions/v1"
        + text("live-1")
        + struct.pack(">Q", 7)
        + text("sess-1")
        + struct.pack(">I", 1)
        + text("240p")
        + struct.pack(">QQQQ", 320, 240, 30, PIXELS)
        + keccak256(data)
    )
    assert rendition_digest(JOB, outs) == keccak256(message)


def test_the_signer_is_recovered_from_the_signature(outputs: list[JobOutput]) -> None:
    signature = sign_renditions(ORCH_KEY, JOB, outputs)
    assert len(signature) == 65 and signature[64] in (27, 28)
    assert recover_rendition_signer(JOB, outputs, signature) == ORCH
    verify_result(JOB, outputs, signature, expected_signer=ORCH.lower())


def _flip_byte(track: int) -> Callable[[Job, list[JobOutput]], tuple[Job, list[JobOutput]]]:
    def change(job: Job, outs: list[JobOutput]) -> tuple[Job, list[JobOutput]]:
        data = bytearray(outs[track].data)
        data[len(data) // 2] ^= 1
        outs[track] = attrs.evolve(outs[track], data=bytes(data))
        return job, outs

    return change


def claiming(out: JobOutput, **changes: Any) -> JobOutput:
    return attrs.evolve(out, info=attrs.evolve(out.info, **changes))


def _claim(track: int, **changes: Any) -> Callable[..., tuple[Job, list[JobOutput]]]:
    def change(job: Job, outs: list[JobOutput]) -> tuple[Job, list[JobOutput]]:
        outs[track] = claiming(outs[track], **changes)
        return job, outs

    return change


TAMPERING: dict[str, Callable[[Job, list[JobOutput]], tuple[Job, list[JobOutput]]]] = {
    "a byte of the first rendition": _flip_byte(0),
    "a byte of the second rendition": _flip_byte(1),
    "a pixel count": _claim(1, pixels=PIXELS + 1),
    "a frame count": _claim(0, frames=31),
    "a width": _claim(0, width=640),
    "a name": _claim(1, name="720p"),
    "the seq": lambda j, o: (attrs.evolve(j, seq=8), o),
    "the stream": lambda j, o: (attrs.evolve(j, stream_id="live-2"), o),
    "the session": lambda j, o: (attrs.evolve(j, session_id="sess-2"), o),
    "the order": lambda j, o: (j, o[::-1]),
    "a dropped rendition": lambda j, o: (j, o[:1]),
}


@pytest.mark.parametrize("tamper", TAMPERING.values(), ids=list(TAMPERING))
def test_any_change_recovers_another_address(
    outputs: list[JobOutput],
    tamper: Callable[[Job, list[JobOutput]], tuple[Job, list[JobOutput]]],
) -> None:
    signature = sign_renditions(ORCH_KEY, JOB, outputs)
    job, changed = tamper(JOB, list(outputs))
    assert recover_rendition_signer(job, changed, signature) != ORCH
    with pytest.raises(
        VerificationError,
        match=rf"^signature from 0x[0-9a-fA-F]{{40}} not the orchestrator {ORCH}$",
    ):
        verify_result(job, changed, signature, expected_signer=ORCH, check_pixels=False)


def test_another_key_is_not_the_orchestrator(outputs: list[JobOutput]) -> None:
    signature = sign_renditions(OTHER_KEY, JOB, outputs)
    other = address_of(OTHER_KEY)
    with pytest.raises(VerificationError) as caught:
        verify_result(JOB, outputs, signature, expected_signer=ORCH)
    assert caught.value.reason == f"signature from {other} not the orchestrator {ORCH}"


def test_a_missing_or_malformed_signature_is_refused(outputs: list[JobOutput]) -> None:
    with pytest.raises(VerificationError, match=r"^missing signature$"):
        verify_result(JOB, outputs, b"", expected_signer=ORCH)
    bad_v = sign_renditions(ORCH_KEY, JOB, outputs)[:64] + b"\x05"
    with pytest.raises(VerificationError, match=r"^malformed signature: .*v must be 27 or 28"):
        verify_result(JOB, outputs, bad_v, expected_signer=ORCH)


def test_off_chain_only_the_pixels_are_checked(outputs: list[JobOutput]) -> None:
    verify_result(JOB, outputs, b"", expected_signer=None)
    inflated = [outputs[0], claiming(outputs[1], pixels=PIXELS * 2)]
    with pytest.raises(VerificationError, match=rf"^rendition source: claims {PIXELS * 2} pixels"):
        verify_result(JOB, inflated, b"", expected_signer=None)


def test_a_signed_lie_about_pixels_is_caught_by_decoding(outputs: list[JobOutput]) -> None:
    """The orchestrator's own signature over an inflated claim: the decode check catches it."""
    lie = [claiming(outputs[0], pixels=PIXELS + 320 * 240), outputs[1]]
    signature = sign_renditions(ORCH_KEY, JOB, lie)
    with pytest.raises(VerificationError) as caught:
        verify_result(JOB, lie, signature, expected_signer=ORCH)
    assert (
        caught.value.reason
        == f"rendition 240p: claims {PIXELS + 320 * 240} pixels, decodes to {PIXELS}"
    )


def test_a_frame_count_lie_is_caught(outputs: list[JobOutput]) -> None:
    lie = [claiming(outputs[0], frames=29)]
    with pytest.raises(
        VerificationError, match=r"^rendition 240p: claims 29 frames, decodes to 30$"
    ):
        verify_result(JOB, lie, b"", expected_signer=None)


def test_count_pixels_decodes_every_frame(clip: bytes) -> None:
    assert count_pixels(clip) == (30, PIXELS)


def test_undecodable_bytes_are_a_media_error() -> None:
    with pytest.raises(MediaError):
        count_pixels(b"\x47" + bytes(187) * 10)


def test_noise_in_place_of_a_rendition_is_undecodable(clip: bytes) -> None:
    noise = random.Random(1).randbytes(len(clip))
    with pytest.raises(VerificationError, match=r"^rendition 240p: undecodable: "):
        verify_result(JOB, [output("240p", noise)], b"", expected_signer=None)


def test_a_truncated_rendition_decodes_to_fewer_pixels(clip: bytes) -> None:
    truncated = output("240p", clip[: len(clip) // 2])
    with pytest.raises(
        VerificationError, match=rf"^rendition 240p: claims {PIXELS} pixels, decodes to \d+$"
    ):
        verify_result(JOB, [truncated], b"", expected_signer=None)


def _frame(wire: bytes) -> Frame:
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    frame = decoder.next_frame()
    assert frame is not None
    return frame


def test_a_summary_signature_is_65_bytes_or_absent() -> None:
    summary = ResultSummary(renditions=(), signature=bytes(65))
    body = _frame(encode_message(summary)).body
    assert decode_message(Frame(type=FrameType.SUMMARY, body=body)) == summary
    with pytest.raises(LocalProtocolError, match="a signature is 65 bytes or absent, not 64"):
        encode_message(ResultSummary(renditions=(), signature=bytes(64)))
    forged = body.replace(b"\xc4\x41" + bytes(65), b"\xc4\x01\x00")  # msgpack bin 8
    with pytest.raises(RemoteProtocolError, match="a signature is 65 bytes or absent, not 1"):
        decode_message(_frame(encode_frame(FrameType.SUMMARY, forged)))


async def _exchange(
    outputs: Sequence[JobOutput], sign: Callable[[Job, list[JobOutput]], bytes] | None
) -> tuple[list[JobOutput], bytes]:
    orch_side, gateway_side = trio.testing.memory_stream_pair()

    async def handler(job: Job, source: SegmentBuffer, _: ResultSink) -> Sequence[JobOutput]:
        await source.wait_closed()
        return outputs

    upload = SegmentBuffer()
    upload.append(b"segment bytes")
    upload.close()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(serve_job, orch_side, handler, sign=sign))
            result = await request_job(gateway_side, JOB, upload, response_timeout=5)
    return result.outputs, result.signature


async def test_a_signed_job_verifies_after_the_wire(outputs: list[JobOutput]) -> None:
    received, signature = await _exchange(outputs, functools.partial(sign_renditions, ORCH_KEY))
    assert [o.data for o in received] == [o.data for o in outputs]
    assert recover_rendition_signer(JOB, received, signature) == ORCH
    await trio.to_thread.run_sync(
        functools.partial(verify_result, JOB, received, signature, expected_signer=ORCH)
    )


async def test_an_unsigned_job_has_no_signature(outputs: list[JobOutput]) -> None:
    received, signature = await _exchange(outputs, None)
    assert signature == b""
    with pytest.raises(VerificationError, match=r"^missing signature$"):
        verify_result(JOB, received, signature, expected_signer=ORCH, check_pixels=False)
