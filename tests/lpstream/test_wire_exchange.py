"""Job streams and control streams: two real endpoints joined by an in-memory byte link."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import DEFAULT_PROFILES
from lpstream.wire import (
    RESPONSE_TRANSITIONS,
    UPLOAD_TRANSITIONS,
    Data,
    Error,
    FrameType,
    GetInfo,
    Job,
    JobFailed,
    JobReceived,
    JobRequester,
    JobResponder,
    MessageStream,
    OrchInfo,
    Ping,
    Pong,
    ProfileSpec,
    Rendition,
    RenditionData,
    RenditionInfo,
    RequesterEvent,
    ResponderEvent,
    ResponseComplete,
    ResponseState,
    Result,
    ResultStarted,
    ResultSummary,
    UploadComplete,
    UploadData,
    UploadState,
    WorkerHello,
    WorkerWelcome,
    encode_frame,
    encode_message,
    encode_varint,
)

JOB = Job(
    stream_id="stream1",
    seq=3,
    duration_ms=2000,
    profiles=tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES),
    payment=b"ticket",
)
RESULT = Result(
    renditions=(
        Rendition(name="360p", width=640, height=360),
        Rendition(name="240p", width=426, height=240),
    )
)


def summary_for(result: Result, sizes: list[int]) -> ResultSummary:
    return ResultSummary(
        renditions=tuple(
            RenditionInfo(
                name=r.name,
                width=r.width,
                height=r.height,
                pixels=r.width * r.height * 60,
                frames=60,
                size=size,
                duration_ms=2000,
            )
            for r, size in zip(result.renditions, sizes, strict=True)
        )
    )


def requester_events(requester: JobRequester) -> list[RequesterEvent]:
    events = []
    while (event := requester.next_event()) is not None:
        events.append(event)
    return events


def responder_events(responder: JobResponder) -> list[ResponderEvent]:
    events = []
    while (event := responder.next_event()) is not None:
        events.append(event)
    return events


def feed_requester(data: bytes, *, eof: bool = True, job: Job = JOB) -> list[RequesterEvent]:
    """A requester that sent ``job``, fed ``data`` (and a FIN) as the response."""
    requester = JobRequester()
    requester.send_job(job)
    requester.receive_data(data)
    if eof:
        requester.receive_eof()
    return requester_events(requester)


def requester_error(data: bytes, *, eof: bool = True) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as exc:
        feed_requester(data, eof=eof)
    return exc.value


def feed_responder(data: bytes, *, eof: bool = True, **kwargs: Any) -> list[ResponderEvent]:
    responder = JobResponder(**kwargs)
    responder.receive_data(data)
    if eof:
        responder.receive_eof()
    return responder_events(responder)


def responder_error(data: bytes, *, eof: bool = True, **kwargs: Any) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as exc:
        feed_responder(data, eof=eof, **kwargs)
    return exc.value


def data_frame(track: int, payload: bytes) -> bytes:
    return encode_message(Data(track=track, payload=payload))


# --- Full jobs over an in-memory link ------------------------------------------------------


def test_full_job_uploads_the_segment_and_returns_every_rendition() -> None:
    requester, responder = JobRequester(max_data_size=1000), JobResponder(max_data_size=1000)
    segment = bytes(range(256)) * 20  # 5120 bytes: six DATA frames at 1000
    link = requester.send_job(JOB)
    for i in range(0, len(segment), 3000):
        link += requester.send_data(segment[i : i + 3000])
    requester.end_upload()
    responder.receive_data(link)
    responder.receive_eof()
    events = responder_events(responder)
    assert events[0] == JobReceived(job=JOB)
    assert events[-1] == UploadComplete()
    assert b"".join(e.data for e in events if isinstance(e, UploadData)) == segment
    assert all(len(e.data) <= 999 for e in events if isinstance(e, UploadData))
    assert responder.job == JOB
    assert responder.upload_state is UploadState.DONE

    outputs = [b"A" * 2500, b"B" * 700]
    back = responder.send_result(RESULT)
    back += responder.send_rendition_data(0, outputs[0])
    back += responder.send_rendition_data(1, outputs[1])
    assert responder.bytes_sent(0) == 2500
    assert not responder.response_done
    summary = summary_for(RESULT, [2500, 700])
    back += responder.send_summary(summary)
    assert responder.response_done

    requester.receive_data(back)
    before_fin = requester_events(requester)
    assert before_fin[0] == ResultStarted(result=RESULT)
    for track, expected in enumerate(outputs):
        got = b"".join(
            e.data for e in before_fin if isinstance(e, RenditionData) and e.track == track
        )
        assert got == expected
    requester.receive_eof()
    assert requester_events(requester) == [ResponseComplete(summary=summary)]
    assert requester.response_state is ResponseState.DONE


def test_responder_may_stream_renditions_while_the_upload_still_arrives() -> None:
    requester, responder = JobRequester(), JobResponder()
    responder.receive_data(requester.send_job(JOB) + requester.send_data(b"first"))
    assert responder_events(responder) == [JobReceived(job=JOB), UploadData(data=b"first")]
    requester.receive_data(responder.send_result(RESULT) + responder.send_rendition_data(1, b"x"))
    assert requester_events(requester) == [
        ResultStarted(result=RESULT),
        RenditionData(track=1, data=b"x"),
    ]
    responder.receive_data(requester.send_data(b"second"))
    requester.end_upload()
    responder.receive_eof()
    assert responder_events(responder) == [UploadData(data=b"second"), UploadComplete()]
    summary = summary_for(RESULT, [0, 1])
    requester.receive_data(responder.send_summary(summary))
    requester.receive_eof()
    assert requester_events(requester) == [ResponseComplete(summary=summary)]


def test_responder_refusal_before_any_result_fails_the_job() -> None:
    requester, responder = JobRequester(), JobResponder()
    responder.receive_data(requester.send_job(JOB))
    assert responder_events(responder) == [JobReceived(job=JOB)]
    requester.receive_data(responder.send_error(402, "payment required"))
    requester.receive_eof()
    assert requester_events(requester) == [JobFailed(code=402, message="payment required")]
    assert responder.response_done


def test_responder_failure_mid_response_fails_the_job() -> None:
    requester, responder = JobRequester(), JobResponder()
    responder.receive_data(requester.send_job(JOB))
    responder_events(responder)
    back = responder.send_result(RESULT) + responder.send_rendition_data(0, b"partial")
    back += responder.send_error(500, "encoder crashed")
    requester.receive_data(back)
    requester.receive_eof()
    assert requester_events(requester) == [
        ResultStarted(result=RESULT),
        RenditionData(track=0, data=b"partial"),
        JobFailed(code=500, message="encoder crashed"),
    ]


def test_responder_answers_a_broken_request_with_its_code() -> None:
    requester, responder = JobRequester(), JobResponder()
    responder.receive_data(data_frame(0, b"no job first"))
    with pytest.raises(RemoteProtocolError) as exc:
        responder.next_event()
    requester.send_job(JOB)  # (so the requester accepts an answer)
    requester.receive_data(responder.send_error(exc.value.code, str(exc.value)))
    requester.receive_eof()
    [failed] = requester_events(requester)
    assert isinstance(failed, JobFailed)
    assert failed.code == 400


def test_empty_renditions_and_empty_upload_complete() -> None:
    requester, responder = JobRequester(), JobResponder()
    requester_bytes = requester.send_job(JOB) + requester.send_data(b"")
    requester.end_upload()
    assert feed_responder(requester_bytes) == [JobReceived(job=JOB), UploadComplete()]
    responder.receive_data(requester_bytes)
    responder_events(responder)
    empty = Result(renditions=())
    back = responder.send_result(empty) + responder.send_summary(ResultSummary(renditions=()))
    assert feed_requester(back) == [
        ResultStarted(result=empty),
        ResponseComplete(summary=ResultSummary(renditions=())),
    ]


# --- What the requester refuses --------------------------------------------------------------

OK_RESULT = encode_message(RESULT)
OK_SUMMARY = encode_message(summary_for(RESULT, [0, 0]))


@pytest.mark.parametrize(
    ("response", "code"),
    [
        (data_frame(0, b"x"), 400),  # DATA before RESULT
        (OK_SUMMARY, 400),  # SUMMARY before RESULT
        (encode_message(JOB), 400),  # a JOB coming back
        (encode_message(Ping(nonce=1)), 400),  # a control message on a job stream
        (OK_RESULT + OK_RESULT, 400),  # second RESULT
        (OK_RESULT + data_frame(2, b"x"), 400),  # DATA for an unknown track
        (OK_RESULT + data_frame(2**40, b"x"), 400),
        (OK_RESULT + encode_message(summary_for(RESULT, [1, 0])), 400),  # size mismatch
        (OK_RESULT + data_frame(0, b"ab") + OK_SUMMARY, 400),  # bytes the summary denies
        (OK_RESULT + encode_message(ResultSummary(renditions=())), 400),  # wrong count
        (
            OK_RESULT
            + encode_message(summary_for(Result(renditions=RESULT.renditions[::-1]), [0, 0])),
            400,
        ),  # wrong order
        (OK_RESULT + OK_SUMMARY + data_frame(0, b""), 400),  # DATA after SUMMARY
        (OK_RESULT + OK_SUMMARY + encode_message(Error(code=500)), 400),  # ERROR after SUMMARY
        (encode_message(Error(code=503)) + OK_RESULT, 400),  # RESULT after ERROR
        (encode_frame(FrameType.RESULT, msgspec.msgpack.encode({"renditions": 1})), 400),
        (b"\x01" + encode_varint(64 * 1024 + 1), 413),  # oversized header, body never sent
        (b"\x63", 400),  # unknown frame type
    ],
)
def test_requester_refuses_a_broken_response(response: bytes, code: int) -> None:
    assert requester_error(response, eof=False).code == code


def test_requester_refuses_a_result_to_a_job_it_never_sent() -> None:
    requester = JobRequester()
    requester.receive_data(OK_RESULT)
    with pytest.raises(RemoteProtocolError):
        requester.next_event()


def test_requester_limits_the_bytes_of_each_rendition() -> None:
    requester = JobRequester(max_rendition_size=10)
    requester.send_job(JOB)
    requester.receive_data(OK_RESULT + data_frame(0, b"x" * 6) + data_frame(1, b"x" * 10))
    assert len(requester_events(requester)) == 3
    requester.receive_data(data_frame(0, b"x" * 5))
    with pytest.raises(RemoteProtocolError) as exc:
        requester.next_event()
    assert exc.value.code == 413


def test_requester_stays_broken_after_a_remote_error() -> None:
    requester = JobRequester()
    requester.send_job(JOB)
    requester.receive_data(data_frame(0, b"x"))
    with pytest.raises(RemoteProtocolError) as first:
        requester.next_event()
    assert requester.response_state is ResponseState.ERROR
    requester.receive_data(OK_RESULT)
    requester.receive_eof()
    with pytest.raises(RemoteProtocolError) as again:
        requester.next_event()
    assert again.value is first.value


@pytest.mark.parametrize(
    "response",
    [
        b"",
        OK_RESULT,
        OK_RESULT + data_frame(0, b"abc"),
        OK_RESULT + data_frame(0, b"abc")[:-1],  # FIN inside a DATA frame
        OK_RESULT + OK_SUMMARY[:-1],  # FIN inside SUMMARY
        encode_message(Error(code=500, message="x"))[:-1],  # FIN inside ERROR
    ],
)
def test_fin_before_the_response_is_complete_is_a_truncated_job(response: bytes) -> None:
    events = feed_requester(response)
    assert isinstance(events[-1], JobFailed)
    assert events[-1].code == 502
    assert "truncated" in events[-1].message


def test_events_before_the_fin_are_not_lost_when_the_response_is_truncated() -> None:
    events = feed_requester(OK_RESULT + data_frame(1, b"abc"))
    assert events[:2] == [ResultStarted(result=RESULT), RenditionData(track=1, data=b"abc")]


def test_requester_says_nothing_more_after_the_fin_that_follows_an_error() -> None:
    requester = JobRequester()
    requester.send_job(JOB)
    requester.receive_data(encode_message(Error(code=503, message="busy")))
    assert requester_events(requester) == [JobFailed(code=503, message="busy")]
    requester.receive_eof()
    assert requester_events(requester) == []
    assert requester.response_state is ResponseState.DONE


def test_requester_events_are_none_after_completion() -> None:
    requester = JobRequester()
    requester.send_job(JOB)
    requester.receive_data(OK_RESULT + OK_SUMMARY)
    requester.receive_eof()
    assert len(requester_events(requester)) == 2
    assert requester.next_event() is None
    with pytest.raises(LocalProtocolError):
        requester.receive_data(b"\x07\x00")


# --- What the responder refuses --------------------------------------------------------------

OK_JOB = encode_message(JOB)


@pytest.mark.parametrize(
    ("upload", "code"),
    [
        (data_frame(0, b"x"), 400),  # DATA before JOB
        (OK_JOB + OK_JOB, 400),  # second JOB
        (OK_JOB + data_frame(1, b"x"), 400),  # upload on a track other than 0
        (OK_RESULT, 400),  # RESULT on the upload
        (OK_JOB + encode_message(Error(code=500)), 400),
        (encode_message(GetInfo()), 400),
        (
            encode_frame(
                FrameType.JOB,
                msgspec.msgpack.encode(
                    {"stream_id": "../etc", "seq": 0, "duration_ms": 0, "profiles": []}
                ),
            ),
            400,
        ),  # bad stream id
        (
            encode_frame(
                FrameType.JOB,
                msgspec.msgpack.encode(
                    {
                        "stream_id": "s",
                        "seq": 0,
                        "duration_ms": 0,
                        "profiles": [
                            {"name": f"p{i}", "width": 64, "height": 64, "bitrate": 1000}
                            for i in range(17)
                        ],
                    }
                ),
            ),
            400,
        ),  # too many profiles
        (b"\x01" + encode_varint(64 * 1024 + 1), 413),  # oversized JOB, body never sent
        (OK_JOB + b"\x02" + encode_varint(1024 * 1024 + 1), 413),  # oversized DATA frame
        (b"\xff", 400),
    ],
)
def test_responder_refuses_a_broken_upload(upload: bytes, code: int) -> None:
    assert responder_error(upload, eof=False).code == code


@pytest.mark.parametrize("upload", [b"", OK_JOB[:-1], OK_JOB + data_frame(0, b"abc")[:-1]])
def test_fin_before_the_job_or_inside_a_frame_is_a_400(upload: bytes) -> None:
    assert responder_error(upload).code == 400


def test_responder_limits_the_upload_size() -> None:
    ok = OK_JOB + data_frame(0, b"x" * 60) + data_frame(0, b"x" * 40)
    assert len(feed_responder(ok, max_upload_size=100)) == 4
    assert responder_error(ok + data_frame(0, b"x"), max_upload_size=100).code == 413


def test_responder_limits_the_job_header_size() -> None:
    assert responder_error(OK_JOB, max_header_size=len(OK_JOB) - 4).code == 413


def test_responder_stays_broken_after_a_remote_error_but_can_still_answer() -> None:
    responder = JobResponder()
    responder.receive_data(OK_JOB + OK_JOB)
    assert responder.next_event() == JobReceived(job=JOB)
    with pytest.raises(RemoteProtocolError) as first:
        responder.next_event()
    assert responder.upload_state is UploadState.ERROR
    with pytest.raises(RemoteProtocolError) as again:
        responder.next_event()
    assert again.value is first.value
    assert responder.send_error(409, "x" * 5000) == encode_message(
        Error(code=409, message="x" * 1024)
    )


# --- Local errors: our caller misused the API -----------------------------------------------


def test_requester_sends_in_order_only() -> None:
    requester = JobRequester()
    with pytest.raises(LocalProtocolError):
        requester.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        requester.end_upload()
    requester.send_job(JOB)  # the misuses above changed nothing
    with pytest.raises(LocalProtocolError):
        requester.send_job(JOB)
    requester.end_upload()
    with pytest.raises(LocalProtocolError):
        requester.send_data(b"x")
    with pytest.raises(LocalProtocolError):
        requester.end_upload()
    assert requester.upload_state is UploadState.DONE


def test_requester_refuses_to_send_a_job_the_peer_would_refuse() -> None:
    requester = JobRequester()
    with pytest.raises(LocalProtocolError):
        requester.send_job(Job(stream_id="no spaces", seq=0, duration_ms=0))
    assert requester.upload_state is UploadState.IDLE


def test_responder_sends_in_order_only() -> None:
    responder = JobResponder()
    with pytest.raises(LocalProtocolError):
        responder.send_result(RESULT)  # before the JOB
    responder.receive_data(OK_JOB)
    responder_events(responder)
    with pytest.raises(LocalProtocolError):
        responder.send_rendition_data(0, b"x")  # before RESULT
    with pytest.raises(LocalProtocolError):
        responder.send_summary(summary_for(RESULT, [0, 0]))
    responder.send_result(RESULT)
    with pytest.raises(LocalProtocolError):
        responder.send_result(RESULT)
    with pytest.raises(LocalProtocolError):
        responder.send_rendition_data(2, b"x")
    responder.send_rendition_data(0, b"abc")
    with pytest.raises(LocalProtocolError):
        responder.send_summary(summary_for(RESULT, [0, 0]))  # sizes do not match
    with pytest.raises(LocalProtocolError):
        responder.send_summary(summary_for(Result(renditions=RESULT.renditions[:1]), [3]))
    assert responder.response_state is ResponseState.SENDING
    responder.send_summary(summary_for(RESULT, [3, 0]))
    misuses: list[Callable[[], bytes]] = [
        lambda: responder.send_rendition_data(0, b"x"),
        lambda: responder.send_error(500, "late"),
        lambda: responder.send_summary(summary_for(RESULT, [3, 0])),
    ]
    for misuse in misuses:
        with pytest.raises(LocalProtocolError):
            misuse()


def test_responder_sends_nothing_after_an_error() -> None:
    responder = JobResponder()
    responder.send_error(503, "busy")  # allowed before the JOB
    assert responder.response_done
    with pytest.raises(LocalProtocolError):
        responder.send_error(503, "busy")
    responder.receive_data(OK_JOB)
    responder_events(responder)
    with pytest.raises(LocalProtocolError):
        responder.send_result(RESULT)


def test_error_code_out_of_range_is_a_local_error() -> None:
    with pytest.raises(LocalProtocolError):
        JobResponder().send_error(1000, "no")


# --- The transition tables -------------------------------------------------------------------


def test_transition_tables_hold_exactly_the_documented_orders() -> None:
    assert {
        (s.name, getattr(e, "name", "EOF"), n.name) for (s, e), n in UPLOAD_TRANSITIONS.items()
    } == {
        ("IDLE", "JOB", "SENDING"),
        ("SENDING", "DATA", "SENDING"),
        ("SENDING", "EOF", "DONE"),
    }
    assert {
        (s.name, getattr(e, "name", "EOF"), n.name) for (s, e), n in RESPONSE_TRANSITIONS.items()
    } == {
        ("IDLE", "RESULT", "SENDING"),
        ("IDLE", "ERROR", "FAILED"),
        ("SENDING", "DATA", "SENDING"),
        ("SENDING", "SUMMARY", "SUMMARIZED"),
        ("SENDING", "ERROR", "FAILED"),
        ("SUMMARIZED", "EOF", "DONE"),
        ("FAILED", "EOF", "DONE"),
    }


RESPONSE_PREFIX = {
    ResponseState.IDLE: b"",
    ResponseState.SENDING: OK_RESULT,
    ResponseState.SUMMARIZED: OK_RESULT + OK_SUMMARY,
    ResponseState.FAILED: encode_message(Error(code=500)),
}
FRAME_OF = {
    FrameType.JOB: OK_JOB,
    FrameType.DATA: data_frame(0, b""),
    FrameType.RESULT: OK_RESULT,
    FrameType.ERROR: encode_message(Error(code=500)),
    FrameType.SUMMARY: OK_SUMMARY,
    FrameType.GET_INFO: encode_message(GetInfo()),
    FrameType.PING: encode_message(Ping(nonce=1)),
}


@pytest.mark.parametrize("state", list(RESPONSE_PREFIX))
@pytest.mark.parametrize("frame_type", list(FRAME_OF))
def test_requester_accepts_a_frame_exactly_where_the_table_allows(
    state: ResponseState, frame_type: FrameType
) -> None:
    requester = JobRequester()
    requester.send_job(JOB)
    requester.receive_data(RESPONSE_PREFIX[state])
    requester_events(requester)
    assert requester.response_state is state
    requester.receive_data(FRAME_OF[frame_type])
    if (state, frame_type) in RESPONSE_TRANSITIONS:
        requester_events(requester)
        assert requester.response_state is RESPONSE_TRANSITIONS[(state, frame_type)]
    else:
        with pytest.raises(RemoteProtocolError):
            requester_events(requester)


UPLOAD_PREFIX = {UploadState.IDLE: b"", UploadState.SENDING: OK_JOB}


@pytest.mark.parametrize("state", list(UPLOAD_PREFIX))
@pytest.mark.parametrize("frame_type", list(FRAME_OF))
def test_responder_accepts_a_frame_exactly_where_the_table_allows(
    state: UploadState, frame_type: FrameType
) -> None:
    responder = JobResponder()
    responder.receive_data(UPLOAD_PREFIX[state])
    responder_events(responder)
    assert responder.upload_state is state
    responder.receive_data(FRAME_OF[frame_type])
    if (state, frame_type) in UPLOAD_TRANSITIONS:
        responder_events(responder)
        assert responder.upload_state is UPLOAD_TRANSITIONS[(state, frame_type)]
    else:
        with pytest.raises(RemoteProtocolError):
            responder_events(responder)


# --- Control streams -------------------------------------------------------------------------


def test_control_stream_carries_info_ping_and_worker_registration() -> None:
    gateway, orchestrator = MessageStream(), MessageStream()
    info = OrchInfo(version="0.1.0", price_per_unit=5, capabilities=("transcode",), capacity=8)
    hello = WorkerHello(secret="s", capacity=2, capabilities=("transcode",), version="0.1.0")
    for message, answer in (
        (GetInfo(), info),
        (Ping(nonce=42), Pong(nonce=42)),
        (hello, WorkerWelcome(worker_id="w-1")),
    ):
        wire = gateway.send(message)
        received = []
        for i in range(len(wire)):  # one byte at a time
            orchestrator.receive_data(wire[i : i + 1])
            received.append(orchestrator.next_message())
        assert received == [None] * (len(wire) - 1) + [message]
        gateway.receive_data(orchestrator.send(answer))
        assert gateway.next_message() == answer
        assert gateway.next_message() is None


def test_control_stream_refuses_job_stream_frames_both_ways() -> None:
    stream = MessageStream()
    with pytest.raises(LocalProtocolError):
        stream.send(JOB)
    stream.receive_data(data_frame(0, b"x"))
    with pytest.raises(RemoteProtocolError) as exc:
        stream.next_message()
    assert exc.value.code == 400
    with pytest.raises(RemoteProtocolError) as again:
        stream.next_message()
    assert again.value is exc.value


def test_control_stream_refuses_big_frames_before_their_body() -> None:
    stream = MessageStream(max_header_size=1000)
    stream.receive_data(b"\x02" + encode_varint(1001))
    with pytest.raises(RemoteProtocolError) as exc:
        stream.next_message()
    assert exc.value.code == 413


def test_control_stream_fin_inside_a_frame_is_a_400() -> None:
    stream = MessageStream()
    stream.receive_data(encode_message(Ping(nonce=1))[:-1])
    stream.receive_eof()
    with pytest.raises(RemoteProtocolError):
        stream.next_message()


def test_control_stream_can_be_widened() -> None:
    stream = MessageStream(accept=frozenset(FrameType))
    stream.receive_data(stream.send(JOB))
    assert stream.next_message() == JOB


# --- Properties ------------------------------------------------------------------------------


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points)]


@st.composite
def exchanges(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """An upload and a response, both valid, built by real endpoints."""
    requester, responder = JobRequester(max_data_size=64), JobResponder(max_data_size=64)
    upload = requester.send_job(JOB)
    for chunk in draw(st.lists(st.binary(max_size=150), max_size=4)):
        upload += requester.send_data(chunk)
    requester.end_upload()
    responder.receive_data(upload[: len(OK_JOB)])
    responder_events(responder)
    names = draw(st.lists(st.sampled_from(["a", "b", "c", "source"]), unique=True, max_size=3))
    result = Result(renditions=tuple(Rendition(name=n, width=2, height=2) for n in names))
    ending = draw(st.sampled_from(["summary", "error", "error-first", "truncated"]))
    if ending == "error-first":
        return upload, responder.send_error(503, "busy")
    response = responder.send_result(result)
    sizes = [0] * len(names)
    if names:
        for track, chunk in draw(
            st.lists(st.tuples(st.integers(0, len(names) - 1), st.binary(max_size=100)), max_size=6)
        ):
            response += responder.send_rendition_data(track, chunk)
            sizes[track] += len(chunk)
    if ending == "summary":
        response += responder.send_summary(summary_for(result, sizes))
    elif ending == "error":
        response += responder.send_error(500, "failed")
    return upload, response


@settings(deadline=None, max_examples=150)
@given(exchanges(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_of_a_response_yields_the_same_events(
    exchange: tuple[bytes, bytes], cuts: list[int]
) -> None:
    _, response = exchange
    whole = feed_requester(response)
    requester = JobRequester(max_data_size=64)
    requester.send_job(JOB)
    events = []
    for piece in split(response, cuts):
        requester.receive_data(piece)
        events += requester_events(requester)
    requester.receive_eof()
    events += requester_events(requester)
    assert events == whole
    assert isinstance(events[-1], ResponseComplete | JobFailed)


@settings(deadline=None, max_examples=150)
@given(exchanges(), st.lists(st.integers(min_value=0), max_size=30))
def test_any_chunking_of_an_upload_yields_the_same_events(
    exchange: tuple[bytes, bytes], cuts: list[int]
) -> None:
    upload, _ = exchange
    whole = feed_responder(upload)
    responder = JobResponder(max_data_size=64)
    events = []
    for piece in split(upload, cuts):
        responder.receive_data(piece)
        events += responder_events(responder)
    responder.receive_eof()
    events += responder_events(responder)
    assert events == whole
    assert events[0] == JobReceived(job=JOB)
    assert events[-1] == UploadComplete()


frame_soup = st.lists(
    st.one_of(
        st.sampled_from(list(FRAME_OF.values())),
        st.builds(data_frame, st.integers(0, 3), st.binary(max_size=20)),
        st.binary(max_size=20),
    ),
    max_size=8,
).map(b"".join)


@settings(deadline=None)
@given(frame_soup, st.booleans())
def test_garbage_raises_only_remote_protocol_errors(data: bytes, eof: bool) -> None:
    requester, responder, stream = JobRequester(), JobResponder(), MessageStream()
    requester.send_job(JOB)
    for endpoint, next_item in (
        (requester, requester.next_event),
        (responder, responder.next_event),
        (stream, stream.next_message),
    ):
        endpoint.receive_data(data)
        if eof:
            endpoint.receive_eof()
        try:
            while next_item() is not None:
                pass
        except RemoteProtocolError as exc:
            assert exc.code in (400, 413)
