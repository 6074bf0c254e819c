"""The gateway's batch AI routes over real HTTP (hypercorn on loopback): every route's answer
in go-livepeer's or OpenAI's shape, server-sent events as a client reads them (OpenAI's own
client too, where installed), every refusal with its status and body, a client leaving
mid-stream, and the API token in front of them all.

The gateway's ``AiJobs`` stands for the network (its end-to-end tests are elsewhere). Two run
here: ``known`` makes known outputs from each request and streams them through the relay
piece by piece, with faults on demand; ``tiny`` runs the real batch pipelines on tiny models
in this process (slow: building and loading them takes seconds), so the answers are what a
worker makes. Either way an answer must carry exactly the bytes the job produced.
"""

from __future__ import annotations

import codecs
import http.client
import io
import json
import logging
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from fractions import Fraction
from typing import Any

import attrs
import pytest
import trio
from PIL import Image

from benchmarks.harness.batch_ai import (
    MODELS,
    build_models,
    data_url_bytes,
    multipart,
    picture,
    sse_events,
    tone_wav,
)
from lpstream.access import SecretSet
from lpstream.errors import BusyError, ProtocolError
from lpstream.gateway.ai_jobs import AiJobOutcome, AiJobRequest, ModelOffer
from lpstream.gateway.ai_requests import MAX_IMAGE_BYTES, MAX_JSON_BODY
from lpstream.http.ai_jobs import SEED_HEADER
from lpstream.http.app import build_app
from lpstream.jobs import JobOutput, Relay
from lpstream.metrics import Metrics
from lpstream.wire import Rendition, RenditionInfo
from tests.access.client import asgi_call, call
from tests.asgi import Reply, serve_on_loopback
from workers.batch import BatchOutput, BatchPipeline, BatchRegistry, BatchRequest, BatchUsage

pytestmark = pytest.mark.filterwarnings(
    # diffusers' schedulers call np.array on a tensor (tests/workers/test_diffusion.py)
    "ignore:__array__ implementation doesn't accept a copy keyword:DeprecationWarning"
)

TOKEN = "ai-api-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
JSON = {"Content-Type": "application/json"}
MESSAGES = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]


@attrs.define
class Produced:
    """What one job produced, as its relay saw it."""

    outputs: list[Rendition] = attrs.Factory(list)
    tracks: list[bytearray] = attrs.Factory(list)
    pieces: list[tuple[int, bytes]] = attrs.Factory(list)
    units: tuple[int, ...] = ()

    def track(self, name: str) -> bytes:
        return bytes(self.tracks[[o.name for o in self.outputs].index(name)])


@attrs.define
class JobsForTests:
    """An ``AiJobs`` standing for the network (see the module comment)."""

    run_pipeline: Callable[[AiJobRequest, Produced, Callable[[int, bytes], None]], None] | None
    """Runs a request's real pipeline on a thread (``tiny``); None: known outputs."""
    requests: list[AiJobRequest] = attrs.Factory(list)
    produced: list[Produced] = attrs.Factory(list)
    fail_before: Exception | None = None
    """Raised before any output."""
    fail_after: int | None = None
    """Fail with 502 after this many pieces of output."""
    pause: float = 0.0
    """Seconds between pieces (known outputs)."""
    gate: trio.Event | None = None
    """Known outputs wait for it after their first piece."""
    cancelled: trio.Event = attrs.Factory(trio.Event)

    def offered_models(self) -> list[ModelOffer]:
        return [
            ModelOffer(
                capability=capability,
                model_id=model_id,
                price_per_unit=3,
                pixels_per_unit=1,
                warm=True,
                orchestrators=1,
            )
            for capability, model_id in sorted(MODELS.items())
        ]

    async def run_ai_job(self, request: AiJobRequest, relay: Relay) -> AiJobOutcome:
        self.requests.append(request)
        produced = Produced()
        self.produced.append(produced)
        if self.fail_before is not None:
            raise self.fail_before
        if request.model_id != MODELS[request.capability]:
            raise ProtocolError(f"no orchestrator offers {request.model_id}", code=400)
        try:
            if self.run_pipeline is None:
                await self._known(request, produced, relay)
            else:
                await self._pipeline(request, produced, relay)
        except trio.Cancelled:
            self.cancelled.set()
            raise
        assert sum(produced.units) <= request.units  # quote bounds what is billed
        outputs = tuple(
            JobOutput(
                info=RenditionInfo(
                    name=o.name,
                    width=o.width,
                    height=o.height,
                    pixels=produced.units[i],
                    frames=1,
                    size=len(produced.tracks[i]),
                    duration_ms=0,
                ),
                data=bytes(produced.tracks[i]),
            )
            for i, o in enumerate(produced.outputs)
        )
        return AiJobOutcome(
            outputs=outputs, orchestrator="in-process", model_id=request.model_id, price=Fraction(3)
        )

    async def _send(self, produced: Produced, relay: Relay, track: int, data: bytes) -> None:
        if not produced.pieces:
            await relay.start(produced.outputs)
        if self.fail_after is not None and len(produced.pieces) >= self.fail_after:
            raise ProtocolError("the orchestrator went away", code=502)
        produced.pieces.append((track, data))
        produced.tracks[track] += data
        await relay.data(track, data)

    async def _known(self, request: AiJobRequest, produced: Produced, relay: Relay) -> None:
        outputs, pieces = known_outputs(request)
        produced.outputs = outputs
        produced.tracks = [bytearray() for _ in outputs]
        produced.units = tuple(0 for _ in outputs)
        for i, (track, data) in enumerate(pieces):
            await self._send(produced, relay, track, data)
            if i == 0 and self.gate is not None:
                await self.gate.wait()
            await trio.sleep(self.pause)
        produced.units = known_units(request, outputs, pieces)

    async def _pipeline(self, request: AiJobRequest, produced: Produced, relay: Relay) -> None:
        assert self.run_pipeline is not None
        token = trio.lowlevel.current_trio_token()

        def send(track: int, data: bytes) -> None:
            trio.from_thread.run(self._send, produced, relay, track, data, trio_token=token)

        await trio.to_thread.run_sync(self.run_pipeline, request, produced, send)


def known_outputs(request: AiJobRequest) -> tuple[list[Rendition], list[tuple[int, bytes]]]:
    """Outputs made from the request alone: pictures of its size coloured by its seed, a
    transcript naming the input's length, or a few words, one piece of text at a time."""
    params = request.params
    if request.capability in ("text-to-image", "image-to-image", "upscale"):
        if request.capability == "text-to-image":
            size = (int(params["width"]), int(params["height"]))
        else:
            with Image.open(io.BytesIO(request.input)) as given:
                size = (given.width // 8 * 8, given.height // 8 * 8)
        if request.capability == "upscale":
            size = (size[0] * 4, size[1] * 4)
        count = int(params.get("num_images_per_prompt", 1))
        seed = int(params["seed"])
        outputs = [
            Rendition(name=f"image-{i}", width=size[0], height=size[1]) for i in range(count)
        ]
        return outputs, [(i, png(size, (seed + i) % 256)) for i in range(count)]
    if request.capability == "audio-to-text":
        text = f"{len(request.input)} bytes of sound"
        transcript = {"text": text, "chunks": [{"timestamp": [0.0, 1.0], "text": text}]}
        return [Rendition(name="text", width=0, height=0)], [(0, json.dumps(transcript).encode())]
    words = [b"Hel", b"lo", b" w", b"\xc3", b"\xb6rld", b"!"]  # "ö" split across two pieces
    pieces = [(0, w) for w in words[: int(params["max_tokens"])]]
    finish = b"length" if len(pieces) < len(words) else b"stop"
    names = ("completion", "prompt", "finish")
    return [Rendition(name=n, width=0, height=0) for n in names], [*pieces, (2, finish)]


def known_units(
    request: AiJobRequest, outputs: Sequence[Rendition], pieces: Sequence[tuple[int, bytes]]
) -> tuple[int, ...]:
    if request.capability == "audio-to-text":
        return (1000,)
    if request.capability == "llm":
        return (sum(1 for t, _ in pieces if t == 0), len(request.input) // 8, 0)
    return tuple(o.width * o.height for o in outputs)


def png(size: tuple[int, int], shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (shade, 255 - shade, 7)).save(out, format="PNG")
    return out.getvalue()


@attrs.define
class _ForwardingSink:
    """A pipeline's sink that hands its outputs to the job's relay as they come."""

    produced: Produced
    send: Callable[[int, bytes], None]

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        self.produced.outputs = [
            Rendition(name=o.name, width=o.width, height=o.height) for o in outputs
        ]
        self.produced.tracks = [bytearray() for _ in outputs]

    def data(self, track: int, payload: bytes) -> None:
        self.send(track, payload)


@pytest.fixture(scope="module")
def loaded_pipelines(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[dict[str, BatchPipeline]]:
    """The real batch pipelines, loaded on tiny models (slow: seconds)."""
    directories = build_models(tmp_path_factory.mktemp("models"))
    loaded: dict[str, BatchPipeline] = {}
    for capability, directory in directories.items():
        pipeline = BatchRegistry().get(capability)()
        pipeline.load(str(directory), "cpu")
        loaded[capability] = pipeline
    yield loaded
    for pipeline in loaded.values():
        pipeline.unload()


@pytest.fixture(scope="module", params=["known", pytest.param("tiny", marks=pytest.mark.slow)])
def pipeline_runner(
    request: pytest.FixtureRequest,
) -> Callable[[AiJobRequest, Produced, Callable[[int, bytes], None]], None] | None:
    if request.param == "known":
        return None
    loaded: dict[str, BatchPipeline] = request.getfixturevalue("loaded_pipelines")

    def run(job: AiJobRequest, produced: Produced, send: Callable[[int, bytes], None]) -> None:
        pipeline = loaded[job.capability]
        checked = type(pipeline).checked(BatchRequest(params=job.params, input=job.input))
        usage: BatchUsage = pipeline.run(checked, _ForwardingSink(produced, send))
        produced.units = usage.units

    return run


@pytest.fixture
def jobs(
    pipeline_runner: Callable[[AiJobRequest, Produced, Callable[[int, bytes], None]], None] | None,
) -> JobsForTests:
    return JobsForTests(run_pipeline=pipeline_runner)


@pytest.fixture
def known() -> JobsForTests:
    return JobsForTests(run_pipeline=None)


async def serve(nursery: trio.Nursery, jobs: JobsForTests, tokens: SecretSet | None = None) -> int:
    app = build_app(playback=None, status=dict, metrics=Metrics(), ai_jobs=jobs, api_tokens=tokens)
    port: int = await nursery.start(serve_on_loopback, app)
    return port


@pytest.fixture
async def port(nursery: trio.Nursery, jobs: JobsForTests) -> AsyncIterator[int]:
    yield await serve(nursery, jobs)


@pytest.fixture
async def known_port(nursery: trio.Nursery, known: JobsForTests) -> AsyncIterator[int]:
    yield await serve(nursery, known)


async def post_json(
    port: int, path: str, body: object, headers: dict[str, str] | None = None
) -> Reply:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return await call(port, "POST", path, headers={**JSON, **(headers or {})}, body=data)


async def post_form(
    port: int, path: str, fields: dict[str, str], files: dict[str, tuple[str, str, bytes]]
) -> Reply:
    body, content_type = multipart(fields, files)
    return await call(port, "POST", path, headers={"Content-Type": content_type}, body=body)


def answer(reply: Reply, status: int = 200) -> Any:
    assert reply.status == status, reply
    assert reply.headers["content-type"] == "application/json"
    return json.loads(reply.body)


def size_of(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


async def test_text_to_image(port: int, jobs: JobsForTests) -> None:
    body = {"prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}
    reply = await post_json(port, "/text-to-image", {**body, "num_images_per_prompt": 2, "seed": 5})
    images = answer(reply)["images"]
    assert [(i["seed"], i["nsfw"]) for i in images] == [(5, False), (6, False)]
    produced = jobs.produced[-1]
    assert [data_url_bytes(i["url"]) for i in images] == [
        produced.track("image-0"),
        produced.track("image-1"),
    ]
    assert [size_of(data_url_bytes(i["url"])) for i in images] == [(64, 64)] * 2
    assert reply.headers[SEED_HEADER.lower()] == "5"
    job = jobs.requests[-1]
    assert (job.capability, job.model_id, job.units) == (
        "text-to-image",
        MODELS["text-to-image"],
        64 * 64 * 2,
    )
    assert job.params["guidance_scale"] == 7.5  # the pipeline's defaults travel with it


async def test_the_reported_seed_reproduces_the_picture(port: int, jobs: JobsForTests) -> None:
    body = {"prompt": "a cat", "width": 64, "height": 64, "num_inference_steps": 2}
    first = answer(await post_json(port, "/text-to-image", body))["images"][0]
    other = answer(await post_json(port, "/text-to-image", body))["images"][0]
    assert first["seed"] != other["seed"]
    again = answer(await post_json(port, "/text-to-image", {**body, "seed": first["seed"]}))
    assert data_url_bytes(again["images"][0]["url"]) == data_url_bytes(first["url"])


async def test_image_to_image_and_upscale(port: int, jobs: JobsForTests) -> None:
    fields = {"prompt": "a cat", "num_inference_steps": "2", "strength": "0.5", "seed": "3"}
    reply = await post_form(
        port, "/image-to-image", fields, {"image": ("p.png", "image/png", picture(64, 64))}
    )
    [image] = answer(reply)["images"]
    assert image["seed"] == 3 and data_url_bytes(image["url"]) == jobs.produced[-1].track("image-0")
    assert size_of(data_url_bytes(image["url"])) == (64, 64)
    assert jobs.requests[-1].params["strength"] == 0.5
    reply = await post_form(
        port,
        "/upscale",
        {"prompt": "", "num_inference_steps": "2"},
        {"image": ("p.png", "image/png", picture(32, 32))},
    )
    [image] = answer(reply)["images"]
    assert size_of(data_url_bytes(image["url"])) == (128, 128)
    assert jobs.requests[-1].units == 128 * 128


async def test_audio_to_text(port: int, jobs: JobsForTests) -> None:
    wav, milliseconds = tone_wav(1.0)
    reply = await post_form(
        port,
        "/audio-to-text",
        {"return_timestamps": "true"},
        {"audio": ("a.wav", "audio/wav", wav)},
    )
    transcript = answer(reply)
    assert transcript == {
        k: v
        for k, v in json.loads(jobs.produced[-1].track("text")).items()
        if k in ("text", "chunks")
    }
    assert set(transcript) == {"text", "chunks"}
    assert jobs.requests[-1].units == milliseconds


def completion_of(produced: Produced) -> str:
    return produced.track("completion").decode("utf-8", errors="replace")


async def test_llm_whole_answer(port: int, jobs: JobsForTests) -> None:
    reply = await post_json(port, "/llm", {"messages": MESSAGES, "max_tokens": 4, "temperature": 0})
    body = answer(reply)
    produced = jobs.produced[-1]
    (completion, prompt, _) = produced.units
    assert body["model"] == MODELS["llm"] and body["id"].startswith("chatcmpl-")
    assert isinstance(body["created"], int)
    assert body["choices"] == [
        {
            "index": 0,
            "finish_reason": produced.track("finish").decode(),
            "message": {"role": "assistant", "content": completion_of(produced)},
        }
    ]
    assert (
        body["usage"]
        == body["tokens_used"]
        == {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    )


async def test_llm_streamed_as_ai_worker_streams(port: int, jobs: JobsForTests) -> None:
    reply = await post_json(
        port, "/llm", {"messages": MESSAGES, "max_tokens": 6, "stream": True, "seed": 9}
    )
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/event-stream")
    assert reply.headers[SEED_HEADER.lower()] == "9"
    events = sse_events(reply.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    produced = jobs.produced[-1]
    texts = [c["choices"][0]["delta"]["content"] for c in chunks[:-1]]
    assert "".join(texts) == completion_of(produced)
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
    decoded = [decoder.decode(d) for t, d in produced.pieces if t == 0]
    assert texts == [text for text in decoded if text]  # one event per piece that ends text
    assert all(c["choices"][0]["finish_reason"] == "" for c in chunks[:-1])
    last = chunks[-1]
    assert last["choices"][0]["finish_reason"] == produced.track("finish").decode()
    completion, prompt, _ = produced.units
    assert last["usage"] == {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}


async def test_chat_completions_whole_and_streamed(port: int, jobs: JobsForTests) -> None:
    request = {"model": MODELS["llm"], "messages": MESSAGES, "max_completion_tokens": 5, "seed": 1}
    whole = answer(await post_json(port, "/v1/chat/completions", request))
    assert whole["object"] == "chat.completion"
    assert whole["choices"][0]["message"]["content"] == completion_of(jobs.produced[-1])
    reply = await post_json(
        port,
        "/v1/chat/completions",
        {**request, "stream": True, "stream_options": {"include_usage": True}},
    )
    events = sse_events(reply.body)
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == completion_of(jobs.produced[-1]) == whole["choices"][0]["message"]["content"]
    assert chunks[-2]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"] == whole["usage"]


async def test_openais_client(nursery: trio.Nursery, jobs: JobsForTests) -> None:
    openai = pytest.importorskip("openai")
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    port = await serve(nursery, jobs, tokens)

    def use() -> tuple[Any, list[Any], Any]:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key=TOKEN, max_retries=0)
        whole = client.chat.completions.create(
            model=MODELS["llm"], messages=MESSAGES, max_tokens=5, seed=2
        )
        stream = client.chat.completions.create(
            model=MODELS["llm"],
            messages=MESSAGES,
            max_tokens=5,
            seed=2,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        denied = openai.OpenAI(
            base_url=f"http://127.0.0.1:{port}/v1", api_key="wrong", max_retries=0
        )
        try:
            denied.models.list()
            raise AssertionError("a wrong key was taken")
        except openai.AuthenticationError as refused:
            assert refused.status_code == 401
        try:
            client.chat.completions.create(model="no/such", messages=MESSAGES)
            raise AssertionError("an unknown model was taken")
        except openai.BadRequestError as refused:
            assert refused.code == "model_not_found" and "no/such" in refused.message
        return whole, chunks, client.models.list()

    whole, chunks, models = await trio.to_thread.run_sync(use)
    assert whole.choices[0].message.content == completion_of(jobs.produced[0])
    assert whole.usage.total_tokens == sum(jobs.produced[0].units)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # the same seed: the same tokens
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert {m.id for m in models.data} == set(MODELS.values())


async def test_models_list(known_port: int) -> None:
    listed = answer(await call(known_port, "GET", "/v1/models"))
    assert listed["object"] == "list"
    assert sorted(m["id"] for m in listed["data"]) == sorted(set(MODELS.values()))
    sd = next(m for m in listed["data"] if m["id"] == MODELS["text-to-image"])
    assert sd["object"] == "model" and sd["owned_by"] == "livepeer"
    assert sd["capabilities"] == ["image-to-image", "text-to-image"]


def read_events(
    port: int, path: str, body: dict[str, Any], on_first: Callable[[], None]
) -> list[str]:
    """Reads a streamed answer line by line as a client does, calling ``on_first`` as soon as
    the first event with text has arrived."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("POST", path, body=json.dumps(body), headers=JSON)
        response = connection.getresponse()
        assert response.status == 200
        events, called = [], False
        while line := response.readline():
            if line.startswith(b"data: "):
                events.append(line[6:].strip().decode())
                if not called and '"content":"' in events[-1] and '"content":""' not in events[-1]:
                    called = True
                    on_first()
        return events
    finally:
        connection.close()


async def test_each_piece_is_sent_as_it_arrives(known_port: int, known: JobsForTests) -> None:
    """The job holds after its first piece until the client has read that piece's event."""
    known.gate = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def release() -> None:
        trio.from_thread.run_sync(known.gate.set, trio_token=token)  # type: ignore[union-attr]

    body = {"model": MODELS["llm"], "messages": MESSAGES, "max_tokens": 6, "stream": True}
    with trio.fail_after(20):
        events = await trio.to_thread.run_sync(
            read_events, known_port, "/v1/chat/completions", body, release
        )
    contents = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[1:-2]]
    assert contents == ["Hel", "lo", " w", "örld", "!"]  # "ö" came in two pieces: one event
    assert events[-1] == "[DONE]"


async def test_a_client_leaving_mid_stream_ends_the_job_quietly(
    known_port: int, known: JobsForTests, caplog: pytest.LogCaptureFixture
) -> None:
    known.pause = 0.5  # the job would take seconds
    body = {"messages": MESSAGES, "max_tokens": 6, "stream": True}

    def leave_after_first_event() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", known_port, timeout=20)
        connection.request("POST", "/llm", body=json.dumps(body), headers=JSON)
        response = connection.getresponse()
        assert response.readline().startswith(b"data: ")
        response.close()  # gone, without reading the rest
        connection.close()

    with caplog.at_level(logging.DEBUG, logger="lpstream.http.ai_jobs"):
        await trio.to_thread.run_sync(leave_after_first_event)
        with trio.fail_after(5):
            await known.cancelled.wait()
            # The route logs once the cancelled job has unwound: a moment after it noticed.
            for _ in range(500):  # nothing to wait on but the log itself: look every 10 ms
                if [r for r in caplog.records if r.name == "lpstream.http.ai_jobs"]:
                    break
                await trio.sleep(0.01)
    assert [r.levelno for r in caplog.records if r.name == "lpstream.http.ai_jobs"] == [
        logging.DEBUG
    ]
    assert "the client left" in caplog.records[-1].getMessage()
    assert len(known.produced[-1].pieces) < 6


async def test_a_failure_before_the_first_byte_is_a_json_error(
    known_port: int, known: JobsForTests
) -> None:
    known.fail_before = BusyError("every orchestrator is busy")
    reply = await post_json(known_port, "/llm", {"messages": MESSAGES, "stream": True})
    assert answer(reply, 503) == {"detail": {"msg": "every orchestrator is busy"}}
    known.fail_before = ProtocolError("the deposit does not cover it", code=402)
    reply = await post_json(
        known_port, "/v1/chat/completions", {"messages": MESSAGES, "stream": True}
    )
    assert answer(reply, 402)["error"]["message"] == "the deposit does not cover it"
    known.fail_before = RuntimeError("a bug")
    reply = await post_json(
        known_port, "/text-to-image", {"prompt": "a", "width": 64, "height": 64}
    )
    assert answer(reply, 500) == {"detail": {"msg": "internal error"}}


async def test_a_failure_mid_stream_ends_it_with_an_error_event(
    known_port: int, known: JobsForTests
) -> None:
    known.fail_after = 2
    for path, error in (
        ("/llm", {"detail": {"msg": "the orchestrator went away"}}),
        (
            "/v1/chat/completions",
            {
                "error": {
                    "message": "the orchestrator went away",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            },
        ),
    ):
        reply = await post_json(known_port, path, {"messages": MESSAGES, "stream": True})
        assert reply.status == 200
        events = sse_events(reply.body)
        assert json.loads(events[-1]) == error and "[DONE]" not in events


async def test_a_whole_answer_failing_is_a_json_error(known_port: int, known: JobsForTests) -> None:
    known.fail_after = 1
    reply = await post_json(known_port, "/llm", {"messages": MESSAGES})
    assert answer(reply, 502) == {"detail": {"msg": "the orchestrator went away"}}


@pytest.mark.parametrize(
    ("path", "headers", "body", "status", "said"),
    [
        ("/text-to-image", JSON, b'{"prompt": "a",', 400, "not JSON"),
        (
            "/text-to-image",
            {"Content-Type": "text/plain"},
            b'{"prompt": "a"}',
            415,
            "application/json",
        ),
        (
            "/text-to-image",
            JSON,
            b'{"prompt": "a", "width": 65, "height": 64}',
            400,
            "multiple of 8",
        ),
        (
            "/text-to-image",
            JSON,
            b'{"prompt": "a", "num_images_per_prompt": 9}',
            400,
            "num_images_per_prompt",
        ),
        ("/text-to-image", JSON, b'{"prompt": "a", "style": "x"}', 400, "does not take 'style'"),
        ("/text-to-image", JSON, b'{"prompt": ""}', 400, "prompt"),
        ("/text-to-image", JSON, b'{"prompt": "a", "model_id": "x/y"}', 400, "not offered"),
        ("/image-to-image", JSON, b"{}", 415, "multipart/form-data"),
        ("/llm", JSON, b'{"messages": [{"role": "robot", "content": "x"}]}', 400, "role"),
        (
            "/llm",
            JSON,
            b'{"messages": [{"role": "user", "content": "x"}], "temperature": 9}',
            400,
            "temperature",
        ),
        ("/llm", JSON, b"[" * 200_000, 400, "nested deeper than"),
    ],
)
async def test_refusals_in_go_livepeers_shape(
    known_port: int,
    known: JobsForTests,
    path: str,
    headers: dict[str, str],
    body: bytes,
    status: int,
    said: str,
) -> None:
    reply = await call(known_port, "POST", path, headers=headers, body=body)
    refused = answer(reply, status)
    assert set(refused) == {"detail"} and said in refused["detail"]["msg"], refused
    assert known.requests == []  # nothing was sent, nothing paid


async def test_form_refusals(known_port: int, known: JobsForTests) -> None:
    reply = await post_form(known_port, "/image-to-image", {"prompt": "a"}, {})
    assert "needs a file in the form field 'image'" in answer(reply, 400)["detail"]["msg"]
    reply = await post_form(
        known_port,
        "/image-to-image",
        {"prompt": "a"},
        {"image": ("p", "image/png", b"not a picture")},
    )
    assert answer(reply, 400)["detail"]["msg"]
    reply = await post_form(
        known_port, "/audio-to-text", {}, {"audio": ("a.wav", "audio/wav", b"not audio at all")}
    )
    assert answer(reply, 400)["detail"]["msg"]
    reply = await call(
        known_port, "POST", "/upscale", headers={"Content-Type": "multipart/form-data"}, body=b"x"
    )
    assert "boundary" in answer(reply, 400)["detail"]["msg"]
    assert known.requests == []


async def test_oversized_bodies_are_413(known_port: int) -> None:
    big = b'{"messages": "' + b"x" * MAX_JSON_BODY + b'"}'
    reply = await call(known_port, "POST", "/llm", headers=JSON, body=big)
    assert answer(reply, 413) == {"detail": {"msg": f"/llm body over {MAX_JSON_BODY} bytes"}}
    reply = await call(known_port, "POST", "/v1/chat/completions", headers=JSON, body=big)
    assert answer(reply, 413)["error"]["type"] == "invalid_request_error"
    huge = picture(8, 8) + bytes(MAX_IMAGE_BYTES)  # within the body's limit, past the file's
    reply = await post_form(
        known_port, "/image-to-image", {"prompt": "a"}, {"image": ("p.png", "image/png", huge)}
    )
    assert answer(reply, 413) == {
        "detail": {"msg": f"file 'image' is over {MAX_IMAGE_BYTES} bytes (max_file_bytes)"}
    }


async def test_refusals_in_openais_shape(known_port: int) -> None:
    reply = await post_json(
        known_port, "/v1/chat/completions", {"model": "no/such", "messages": MESSAGES}
    )
    error = answer(reply, 400)["error"]
    assert (error["type"], error["param"], error["code"]) == (
        "invalid_request_error",
        "model",
        "model_not_found",
    )
    reply = await post_json(known_port, "/v1/chat/completions", {"messages": MESSAGES, "n": 3})
    assert answer(reply, 400)["error"]["param"] == "n"
    reply = await call(
        known_port,
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "text/plain"},
        body=b"{}",
    )
    assert answer(reply, 415)["error"]["message"] == "expected application/json, not text/plain"


async def test_the_ai_routes_need_the_api_token(nursery: trio.Nursery, known: JobsForTests) -> None:
    tokens = SecretSet.of("api", [TOKEN], flag="--api-token")
    port = await serve(nursery, known, tokens)
    routes = [
        ("POST", "/text-to-image"),
        ("POST", "/image-to-image"),
        ("POST", "/upscale"),
        ("POST", "/audio-to-text"),
        ("POST", "/llm"),
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    for method, path in routes:
        refused = await call(port, method, path, body=b"{}" if method == "POST" else None)
        assert refused.status == 401 and refused.headers["www-authenticate"].startswith("Bearer"), (
            path
        )
        allowed = await call(
            port, method, path, headers={**JSON, **BEARER}, body=b"{}" if method == "POST" else None
        )
        assert allowed.status not in (401, 403), (path, allowed)
    app = build_app(playback=None, status=dict, metrics=Metrics(), ai_jobs=known)
    for method, path in routes:  # no token configured: loopback clients only
        reply = await asgi_call(app, method, path, client=("203.0.113.9", 5000))
        assert reply.status == 403, path
    assert known.requests == []


async def test_a_node_without_ai_jobs_has_no_such_routes(nursery: trio.Nursery) -> None:
    app = build_app(playback=None, status=dict, metrics=Metrics())
    port = await nursery.start(serve_on_loopback, app)
    for method, path in (("POST", "/llm"), ("POST", "/text-to-image"), ("GET", "/v1/models")):
        assert (
            await call(port, method, path, body=b"{}" if method == "POST" else None)
        ).status == 404
