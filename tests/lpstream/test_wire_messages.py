"""Typed messages: exact bytes, strict decoding, every limit, and round trips."""

from __future__ import annotations

from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lpstream.errors import LocalProtocolError, RemoteProtocolError
from lpstream.media import DEFAULT_PROFILES, VideoProfile
from lpstream.wire import (
    MAX_PAYMENT_SIZE,
    AiModelOffer,
    Data,
    End,
    Error,
    Frame,
    FrameDecoder,
    FrameType,
    GetInfo,
    Job,
    Message,
    OrchInfo,
    Ping,
    Pong,
    ProfileSpec,
    Rendition,
    RenditionInfo,
    Result,
    ResultSummary,
    WorkerHello,
    WorkerWelcome,
    decode_message,
    encode_message,
    frame_type_of,
)


def decode_one(wire: bytes) -> Message:
    decoder = FrameDecoder()
    decoder.receive_data(wire)
    frame = decoder.next_frame()
    assert frame is not None
    assert decoder.pending == 0
    return decode_message(frame)


def raw(frame_type: FrameType, obj: Any) -> Frame:
    """A frame whose body is ``obj`` in msgpack, bypassing the checks of encode_message."""
    return Frame(type=frame_type, body=msgspec.msgpack.encode(obj))


def remote_error(frame: Frame) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError) as exc:
        decode_message(frame)
    return exc.value


JOB_FIELDS: dict[str, Any] = {"stream_id": "s", "seq": 0, "duration_ms": 2000}

# Field order on the wire is msgspec's for attrs classes (sorted by name); these pin it.
EXACT = [
    (Ping(nonce=1), "0708" + "81" + "a56e6f6e6365" + "01"),
    (Pong(nonce=300), "080a" + "81" + "a56e6f6e6365" + "cd012c"),
    (GetInfo(), "050981a673656e646572a0"),  # {"sender": ""}
    (End(), "0b0180"),
    (WorkerWelcome(worker_id="w1"), "0a0e" + "81" + "a9776f726b65725f6964" + "a27731"),
    (Data(track=0, payload=b"ab"), "0203006162"),
    (Data(track=64, payload=b""), "02024040"),
]


@pytest.mark.parametrize(("message", "wire"), EXACT)
def test_message_encodes_to_exact_bytes(message: Message, wire: str) -> None:
    assert encode_message(message).hex() == wire
    assert decode_one(bytes.fromhex(wire)) == message


SAMPLES: list[Message] = [
    Job(
        stream_id="live_1.a-b",
        seq=7,
        duration_ms=2000,
        profiles=tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES),
        params={"prompt": "a cat", "steps": 4, "strength": 0.5, "fast": True},
        payment=b"\x00\x01ticket",
        session_id="sess-1",
    ),
    Job(stream_id="s", seq=0, duration_ms=0, pipeline="comfy"),
    Data(track=3, payload=b"\x00" * 100),
    Result(renditions=(Rendition(name="360p", width=640, height=360),)),
    Result(renditions=()),
    ResultSummary(
        renditions=(
            RenditionInfo(
                name="360p",
                width=640,
                height=360,
                pixels=640 * 360 * 60,
                frames=60,
                size=123456,
                duration_ms=2000,
            ),
        )
    ),
    Error(code=402, message="payment required"),
    GetInfo(),
    OrchInfo(
        version="0.1.0",
        price_per_unit=1200,
        pixels_per_unit=1000,
        capabilities=("transcode", "comfy"),
        capacity=10,
        in_use=3,
        ticket_params=b"params",
    ),
    Ping(nonce=2**63 - 1),
    Pong(nonce=0),
    WorkerHello(secret="s3cret", capacity=4, capabilities=("transcode",), version="0.1.0"),
    WorkerWelcome(worker_id="worker-1"),
    End(),
]


@pytest.mark.parametrize("message", SAMPLES, ids=lambda m: type(m).__name__)
def test_every_message_round_trips_through_its_frame(message: Message) -> None:
    wire = encode_message(message)
    assert wire[0] == frame_type_of(message)
    assert decode_one(wire) == message


def test_profile_spec_converts_to_and_from_video_profile() -> None:
    for profile in DEFAULT_PROFILES:
        assert ProfileSpec.from_profile(profile).to_profile() == profile
    job = Job(
        stream_id="s",
        seq=1,
        duration_ms=2000,
        profiles=tuple(ProfileSpec.from_profile(p) for p in DEFAULT_PROFILES),
    )
    assert job.video_profiles() == DEFAULT_PROFILES


@pytest.mark.parametrize(
    "change",
    [
        {"width": 8},
        {"height": 100_000},
        {"bitrate": 1},
        {"fps": -1},
        {"gop": float("nan")},
        {"preset": "turbo"},
        {"name": "a/b"},
        {"name": "source"},
    ],
)
def test_out_of_range_profile_is_a_remote_error_when_converted(change: dict[str, Any]) -> None:
    fields: dict[str, Any] = {
        "name": "720p",
        "width": 1280,
        "height": 720,
        "bitrate": 3_000_000,
    } | change
    spec = ProfileSpec(**fields)
    with pytest.raises(RemoteProtocolError) as exc:
        spec.to_profile()
    assert exc.value.code == 400
    job = Job(stream_id="s", seq=0, duration_ms=0, profiles=(spec,))
    wire = encode_message(job)  # the wire carries it (NaN included); conversion refuses it
    assert encode_message(decode_one(wire)) == wire
    with pytest.raises(RemoteProtocolError):
        job.video_profiles()


PROFILE = {"name": "p", "width": 640, "height": 360, "bitrate": 400_000}


@pytest.mark.parametrize(
    ("frame_type", "obj"),
    [
        (FrameType.JOB, JOB_FIELDS | {"stream_id": ""}),
        (FrameType.JOB, JOB_FIELDS | {"stream_id": "a/b"}),
        (FrameType.JOB, JOB_FIELDS | {"stream_id": "a b"}),
        (FrameType.JOB, JOB_FIELDS | {"stream_id": "abc\n"}),
        (FrameType.JOB, JOB_FIELDS | {"stream_id": "é"}),
        (FrameType.JOB, JOB_FIELDS | {"stream_id": "x" * 129}),
        (FrameType.JOB, JOB_FIELDS | {"seq": -1}),
        (FrameType.JOB, JOB_FIELDS | {"seq": True}),
        (FrameType.JOB, JOB_FIELDS | {"seq": "1"}),
        (FrameType.JOB, JOB_FIELDS | {"duration_ms": 1.5}),
        (FrameType.JOB, {"stream_id": "s", "seq": 1}),
        (
            FrameType.JOB,
            JOB_FIELDS | {"profiles": [PROFILE | {"name": f"p{i}"} for i in range(17)]},
        ),
        (FrameType.JOB, JOB_FIELDS | {"profiles": [PROFILE, PROFILE]}),
        (FrameType.JOB, JOB_FIELDS | {"profiles": [{"name": "p"}]}),
        (FrameType.JOB, JOB_FIELDS | {"pipeline": "../x"}),
        (FrameType.JOB, JOB_FIELDS | {"params": {f"k{i}": i for i in range(33)}}),
        (FrameType.JOB, JOB_FIELDS | {"params": {"k": "v" * 1025}}),
        (FrameType.JOB, JOB_FIELDS | {"params": {"k": [1]}}),
        (FrameType.JOB, JOB_FIELDS | {"params": {"": 1}}),
        (FrameType.JOB, JOB_FIELDS | {"payment": b"p" * (MAX_PAYMENT_SIZE + 1)}),
        (FrameType.JOB, JOB_FIELDS | {"payment": "text"}),
        (FrameType.JOB, [1, 2, 3]),
        (FrameType.JOB, JOB_FIELDS | {"capability": "text to image"}),
        (FrameType.JOB, JOB_FIELDS | {"model_id": "org/model name"}),
        (FrameType.JOB, JOB_FIELDS | {"model_id": "m" * 129}),
        (FrameType.JOB, JOB_FIELDS | {"model_id": "org/model\n"}),
        (
            FrameType.ORCH_INFO,
            {"version": "v", "ai_models": [{"capability": "llm", "model_id": "m"}] * 65},
        ),
        (
            FrameType.ORCH_INFO,
            {
                "version": "v",
                "ai_models": [{"capability": "llm", "model_id": "m", "pixels_per_unit": 0}],
            },
        ),
        (FrameType.RESULT, {"renditions": [{"name": "a", "width": 1, "height": 1}] * 2}),
        (
            FrameType.RESULT,
            {"renditions": [{"name": f"r{i}", "width": 1, "height": 1} for i in range(33)]},
        ),
        (FrameType.RESULT, {"renditions": [{"name": "a", "width": -1, "height": 1}]}),
        (FrameType.ERROR, {"code": 42, "message": ""}),
        (FrameType.ERROR, {"code": 500, "message": "m" * 1025}),
        (FrameType.ORCH_INFO, {"version": "v", "pixels_per_unit": 0}),
        (FrameType.ORCH_INFO, {"version": "v", "capabilities": ["c"] * 65}),
        (FrameType.ORCH_INFO, {"version": "v", "ticket_params": b"t" * (16 * 1024 + 1)}),
        (FrameType.PING, {"nonce": 2**64 - 1}),
        (FrameType.PING, {}),
        (FrameType.WORKER_WELCOME, {"worker_id": ""}),
    ],
)
def test_malformed_or_over_limit_header_is_a_400(frame_type: FrameType, obj: Any) -> None:
    assert remote_error(raw(frame_type, obj)).code == 400


@pytest.mark.parametrize(
    "body",
    [b"", b"\xc1", b"\x81\xa5nonce\x01\x00", b"\x81\xa5nonce", b"\x91" * 50_000 + b"\x90"],
    ids=["empty", "reserved-byte", "trailing", "truncated", "deep-nesting"],
)
def test_undecodable_body_is_a_400(body: bytes) -> None:
    assert remote_error(Frame(type=FrameType.PING, body=body)).code == 400


def test_deeply_nested_unknown_field_is_a_400_not_a_crash() -> None:
    body = b"\x82\xa5nonce\x01\xa1x" + b"\x91" * 60_000 + b"\x90"
    assert remote_error(Frame(type=FrameType.PING, body=body)).code == 400


def test_data_without_a_track_number_is_a_400() -> None:
    assert remote_error(Frame(type=FrameType.DATA, body=b"")).code == 400
    assert remote_error(Frame(type=FrameType.DATA, body=b"\x40")).code == 400


def test_unknown_fields_from_newer_peers_are_ignored() -> None:
    frame = raw(FrameType.PING, {"nonce": 5, "added_later": [1, {"x": b"y"}]})
    assert decode_message(frame) == Ping(nonce=5)


def test_fields_with_defaults_may_be_left_out() -> None:
    assert decode_message(raw(FrameType.JOB, JOB_FIELDS)) == Job(
        stream_id="s", seq=0, duration_ms=2000
    )


@pytest.mark.parametrize(
    "message",
    [
        Job(stream_id="a/b", seq=0, duration_ms=0),
        Job(stream_id="s", seq=-1, duration_ms=0),
        Job(
            stream_id="s",
            seq=0,
            duration_ms=0,
            profiles=tuple(
                ProfileSpec(name=f"p{i}", width=1, height=1, bitrate=1) for i in range(17)
            ),
        ),
        Job(stream_id="s", seq=0, duration_ms=0, payment=b"p" * (MAX_PAYMENT_SIZE + 1)),
        Result(renditions=(Rendition(name="a", width=1, height=1),) * 2),
        Error(code=7, message=""),
        Ping(nonce=2**64),
    ],
    ids=lambda m: type(m).__name__,
)
def test_encoding_what_the_peer_would_refuse_is_a_local_error(message: Message) -> None:
    with pytest.raises(LocalProtocolError):
        encode_message(message)


def test_encoding_a_header_over_the_frame_limit_is_a_local_413() -> None:
    big = Job(
        stream_id="s",
        seq=0,
        duration_ms=0,
        payment=b"p" * MAX_PAYMENT_SIZE,
        params={f"k{i}": "v" * 1024 for i in range(32)},
    )
    with pytest.raises(LocalProtocolError) as exc:
        encode_message(big)
    assert exc.value.code == 413


def test_a_job_with_the_largest_payment_fits_in_a_header_frame() -> None:
    job = Job(
        stream_id="s" * 128,
        seq=2**63 - 1,
        duration_ms=2**63 - 1,
        profiles=tuple(
            ProfileSpec.from_profile(VideoProfile(name=f"{i:0128d}", width=1, height=1, bitrate=1))
            for i in range(16)
        ),
        payment=b"p" * MAX_PAYMENT_SIZE,
        session_id="x" * 128,
    )
    assert decode_one(encode_message(job)) == job


# --- Property tests -------------------------------------------------------------------------

names = st.text(alphabet="abcXYZ019_.-", min_size=1, max_size=20).filter(
    lambda name: not name.startswith(".")  # the stream-name rule: lpstream.media
)
counts = st.integers(min_value=0, max_value=2**63 - 1)
texts = st.text(max_size=30)

profile_specs = st.builds(
    ProfileSpec,
    name=texts,
    width=st.integers(min_value=-(2**63) + 1, max_value=2**63 - 1),
    height=st.integers(min_value=0, max_value=10_000),
    bitrate=st.integers(min_value=0, max_value=10**9),
    fps=st.integers(min_value=0, max_value=240),
    gop=st.floats(allow_nan=False),
    profile=texts,
    preset=texts,
)
param_values = st.one_of(
    st.text(max_size=50),
    st.integers(min_value=-(2**63), max_value=2**64 - 1),
    st.floats(allow_nan=False),
    st.booleans(),
)
jobs = st.builds(
    Job,
    stream_id=names,
    seq=counts,
    duration_ms=counts,
    profiles=st.lists(profile_specs, max_size=16, unique_by=lambda p: p.name).map(tuple),
    pipeline=st.just("") | names,
    params=st.dictionaries(st.text(min_size=1, max_size=10), param_values, max_size=32),
    payment=st.binary(max_size=200),
    session_id=st.just("") | names,
)
renditions = st.builds(Rendition, name=names, width=counts, height=counts)
rendition_infos = st.builds(
    RenditionInfo,
    name=names,
    width=counts,
    height=counts,
    pixels=counts,
    frames=counts,
    size=counts,
    duration_ms=counts,
)
messages: st.SearchStrategy[Message] = st.one_of(
    jobs,
    st.builds(Data, track=st.integers(min_value=0, max_value=2**62 - 1), payload=st.binary()),
    st.builds(
        Result, renditions=st.lists(renditions, max_size=32, unique_by=lambda r: r.name).map(tuple)
    ),
    st.builds(
        ResultSummary,
        renditions=st.lists(rendition_infos, max_size=32, unique_by=lambda r: r.name).map(tuple),
    ),
    st.builds(
        Error, code=st.integers(min_value=100, max_value=999), message=st.text(max_size=1024)
    ),
    st.builds(GetInfo),
    st.builds(
        OrchInfo,
        version=texts,
        price_per_unit=counts,
        pixels_per_unit=st.integers(min_value=1, max_value=2**63 - 1),
        capabilities=st.lists(texts, max_size=64).map(tuple),
        capacity=counts,
        in_use=counts,
        ticket_params=st.binary(max_size=100),
    ),
    st.builds(Ping, nonce=counts),
    st.builds(Pong, nonce=counts),
    st.builds(
        WorkerHello,
        secret=st.text(max_size=100),
        capacity=counts,
        capabilities=st.lists(texts, max_size=5).map(tuple),
        version=texts,
    ),
    st.builds(WorkerWelcome, worker_id=names),
    st.builds(End),
)


@settings(deadline=None)
@given(messages)
def test_generated_messages_round_trip(message: Message) -> None:
    assert decode_one(encode_message(message)) == message


@settings(deadline=None)
@given(st.sampled_from(FrameType), st.binary(max_size=200))
def test_random_bodies_raise_only_remote_protocol_errors(
    frame_type: FrameType, body: bytes
) -> None:
    try:
        decode_message(Frame(type=frame_type, body=body))
    except RemoteProtocolError as exc:
        assert exc.code == 400


msgpack_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats()
    | st.text(max_size=5)
    | st.binary(max_size=5),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4)
    ),
    max_leaves=12,
)


@settings(deadline=None)
@given(
    st.sampled_from([t for t in FrameType if t is not FrameType.DATA]),
    st.dictionaries(
        st.sampled_from(
            [
                "stream_id",
                "seq",
                "duration_ms",
                "profiles",
                "params",
                "payment",
                "renditions",
                "code",
                "message",
                "nonce",
                "version",
                "capabilities",
                "worker_id",
                "name",
            ]
        ),
        msgpack_values,
        max_size=6,
    ),
)
def test_well_formed_msgpack_of_the_wrong_shape_is_only_a_remote_error(
    frame_type: FrameType, obj: dict[str, Any]
) -> None:
    try:
        decode_message(raw(frame_type, obj))
    except RemoteProtocolError as exc:
        assert exc.code == 400


def test_deep_nesting_is_refused_even_with_a_raised_recursion_limit() -> None:
    # py_ecc (imported with web3) raises the limit to 100000; the header check must not rely on it.
    import sys

    before = sys.getrecursionlimit()
    sys.setrecursionlimit(100_000)
    try:
        body = b"\x81\xa5nonce" + b"\x91" * 40_000 + b"\x01"
        error = remote_error(Frame(type=FrameType.PING, body=body))
        assert error.code == 400 and "nested deeper than 32 levels" in str(error)
    finally:
        sys.setrecursionlimit(before)


def test_a_batch_ai_job_and_the_models_offered_round_trip() -> None:
    job = Job(
        stream_id="ai",
        seq=3,
        duration_ms=0,
        session_id="ai-llm",
        capability="llm",
        model_id="org/chat-model_v1.5",
        params={"max_tokens": 12, "temperature": 0.5},
        payment=b"tickets",
    )
    info = OrchInfo(
        version="v",
        ai_models=(
            AiModelOffer(
                capability="text-to-image",
                model_id="org/sd",
                price_per_unit=7,
                pixels_per_unit=2,
                warm=True,
                capacity=3,
            ),
        ),
    )
    hello = WorkerHello(secret="s", capacity=1, ai_models=info.ai_models)
    for message in (job, info, hello):
        assert decode_one(encode_message(message)) == message


def test_a_job_from_a_peer_without_batch_ai_is_no_batch_job() -> None:
    job = decode_message(raw(FrameType.JOB, JOB_FIELDS))
    assert isinstance(job, Job)
    assert job.capability == "" and job.model_id == ""
