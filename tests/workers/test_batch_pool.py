"""Batch models: the registry (with a real installed plugin), the aiModels.json catalog, and
the pool running small real pipelines in this process and in real child processes that
crash, hang and hoard memory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import attrs
import pytest

from tests.workers.batch_test_pipelines import EchoPipeline, GatherPipeline
from workers.batch import (
    BATCH_ENTRY_POINT_GROUP,
    BUILTIN_BATCH_PIPELINES,
    MAX_AI_MODELS,
    AiModel,
    AiModelsError,
    BadRequestError,
    BatchModels,
    BatchOutput,
    BatchRegistry,
    BatchRequest,
    BatchUsage,
    IsolatedBatchRunner,
    RequestTooLargeError,
    UnknownCapabilityError,
    UnknownModelError,
    load_ai_models,
)
from workers.pipelines import InvalidParamsError, PipelineError
from workers.pipelines.guardian import FailureKind, PipelineGuardian
from workers.pipelines.supervision import resident_memory

ROOT = Path(__file__).resolve().parents[2]


class Recorder:
    """A sink that keeps what it was given, in order."""

    def __init__(self, fail_on_data: bool = False) -> None:
        self.outputs: list[BatchOutput] | None = None
        self.pieces: list[tuple[int, bytes]] = []
        self._fail = fail_on_data

    def start(self, outputs: Sequence[BatchOutput]) -> None:
        assert self.outputs is None
        self.outputs = list(outputs)

    def data(self, track: int, payload: bytes) -> None:
        if self._fail:
            raise ConnectionResetError("the client left")
        self.pieces.append((track, payload))

    def track(self, index: int) -> bytes:
        return b"".join(p for t, p in self.pieces if t == index)


def registry() -> BatchRegistry:
    found = BatchRegistry(entry_points=False)
    found.register(EchoPipeline)
    found.register(GatherPipeline)
    return found


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    path = tmp_path / "model"
    path.mkdir()
    return path


def open_models(
    model_dir: Path, *, warm: bool = False, capacity: int = 1, **options: Any
) -> BatchModels:
    models = [
        AiModel(pipeline="test-echo", model_id="tests/echo", path=str(model_dir), warm=warm),
        AiModel(
            pipeline="test-gather", model_id="tests/gather", path=str(model_dir), capacity=capacity
        ),
        AiModel(pipeline="test-echo", model_id="tests/elsewhere"),  # no path: not here
    ]
    return BatchModels(models, registry(), **options)


def echo(models: BatchModels, data: bytes = b"hello world!", **params: Any) -> Recorder:
    sink = Recorder()
    usage = models.run("test-echo", "tests/echo", BatchRequest(params=params, input=data), sink)
    assert usage == BatchUsage(units=(len(data), 0))
    return sink


def gather_at_once(
    models: BatchModels, groups: Sequence[str], sleep: float = 0.0
) -> list[bytes | BaseException]:
    """Runs one gather request per group from as many threads, started together."""
    results: list[bytes | BaseException] = [b""] * len(groups)
    start = threading.Barrier(len(groups))

    def call(index: int) -> None:
        sink = Recorder()
        start.wait()
        try:
            models.run(
                "test-gather",
                "tests/gather",
                BatchRequest(params={"group": groups[index], "sleep": sleep}, input=b"%d" % index),
                sink,
            )
            results[index] = sink.track(0)
        except BaseException as exc:
            results[index] = exc

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(groups))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return results


def batch_sizes(results: Sequence[bytes | BaseException]) -> list[int]:
    sizes = []
    for result in results:
        assert isinstance(result, bytes), result
        sizes.append(int(result.split()[0]))
    return sizes


# -- the registry --------------------------------------------------------------------------


def test_builtin_capabilities_are_listed_without_importing_them_or_torch() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from workers.batch import BatchRegistry, load_ai_models
        names = BatchRegistry().names()
        print(json.dumps({
            "names": names,
            "torch": "torch" in sys.modules,
            "pipelines": sorted(m for m in sys.modules if m.startswith("workers.batch.")
                                and m.rsplit(".", 1)[1] in
                                ("text_to_image", "image_to_image", "upscale", "audio_to_text",
                                 "llm")),
        }))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    found = json.loads(out.stdout)
    assert set(BUILTIN_BATCH_PIPELINES) <= set(found["names"])
    assert found["torch"] is False
    assert found["pipelines"] == []


def test_builtin_pipelines_import_without_torch() -> None:
    code = textwrap.dedent(
        """
        import json, sys
        from workers.batch import BatchRegistry, BUILTIN_BATCH_PIPELINES
        registry = BatchRegistry(entry_points=False)
        specs = {name: registry.get(name).spec.capability for name in BUILTIN_BATCH_PIPELINES}
        print(json.dumps({"specs": specs, "torch": "torch" in sys.modules}))
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout)
    assert found["specs"] == {name: name for name in BUILTIN_BATCH_PIPELINES}
    assert found["torch"] is False


def test_unknown_capabilities_are_bad_requests_naming_the_known_ones() -> None:
    with pytest.raises(UnknownCapabilityError, match=r"'paint' \(known: .*test-echo") as caught:
        registry().get("paint")
    assert isinstance(caught.value, BadRequestError) and caught.value.code == 400


def test_a_builtin_capability_cannot_be_taken_over_in_code() -> None:
    class Impostor(EchoPipeline):
        spec = attrs.evolve(EchoPipeline.spec, capability="llm")

    with pytest.raises(PipelineError, match=r"'llm' is already registered \(builtin\)"):
        BatchRegistry(entry_points=False).register(Impostor)
    with pytest.raises(PipelineError, match="not a BatchPipeline"):
        BatchRegistry(entry_points=False).register(dict)  # type: ignore[arg-type]


PLUGIN = """
from typing import ClassVar
from workers.batch import BatchSpec, BatchUnit
from tests.workers.batch_test_pipelines import EchoPipeline

class Shout(EchoPipeline):
    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="shout", description="Echoes.", unit=BatchUnit.TOKEN, max_input=10
    )

class Misnamed(EchoPipeline):
    spec: ClassVar[BatchSpec] = BatchSpec(
        capability="whisper", description="Echoes.", unit=BatchUnit.TOKEN
    )
"""


def test_a_third_party_batch_pipeline_is_found_through_its_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "lpstream_shout").mkdir()
    (tmp_path / "lpstream_shout" / "__init__.py").write_text(PLUGIN)
    info = tmp_path / "lpstream_shout-0.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: lpstream-shout\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text(
        f"[{BATCH_ENTRY_POINT_GROUP}]\n"
        "shout = lpstream_shout:Shout\n"
        "misnamed = lpstream_shout:Misnamed\n"
        "broken = lpstream_shout_missing:Nothing\n"
        "llm = lpstream_shout:Shout\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        found = BatchRegistry()
        assert "shout" in found.names()
        assert found.get("shout").__name__ == "Shout"
        assert found.source("shout") == "lpstream-shout 0.3"
        assert found.source("llm") == "builtin"
        problems = found.problems
        assert set(problems) >= {"broken", "misnamed", "llm"}
        assert "failed to load" in problems["broken"]
        assert "'whisper'" in problems["misnamed"]
        assert "already taken" in problems["llm"]
    finally:
        sys.modules.pop("lpstream_shout", None)


# -- the catalog ---------------------------------------------------------------------------


def write_models(tmp_path: Path, entries: object) -> Path:
    path = tmp_path / "aiModels.json"
    path.write_text(json.dumps(entries))
    return path


def test_go_livepeer_model_files_are_read_with_local_paths(tmp_path: Path) -> None:
    path = write_models(
        tmp_path,
        [
            {
                "pipeline": "text-to-image",
                "model_id": "stabilityai/sd-turbo",
                "price_per_unit": 4768371,
                "pixels_per_unit": 1,
                "warm": True,
                "optimization_flags": {"SFAST": True},
                "currency": "WEI",
                "path": "models/sd-turbo",
            },
            {
                "pipeline": "llm",
                "model_id": "meta-llama/Meta-Llama-3.1-8B-Instruct",
                "price_per_unit": "18000000000000000000000",
                "capacity": 2,
                "path": "/srv/llama",
            },
            {"pipeline": "upscale", "model_id": "stabilityai/stable-diffusion-x4-upscaler"},
        ],
    )
    image, llm, upscale = load_ai_models(path)
    assert image == AiModel(
        pipeline="text-to-image",
        model_id="stabilityai/sd-turbo",
        path=str(tmp_path / "models" / "sd-turbo"),
        price_per_unit=4768371,
        pixels_per_unit=1,
        warm=True,
    )
    assert llm.price_per_unit == 18 * 10**21 and llm.capacity == 2 and llm.path == "/srv/llama"
    assert not llm.warm and llm.pixels_per_unit == 1
    assert upscale.path is None and upscale.price_per_unit == 0


REFUSALS: list[tuple[object, str]] = [
    ({"pipeline": "paint", "model_id": "a"}, r"model 0: pipeline: 'paint' is not a known .*llm"),
    ({"pipeline": "llm", "model_id": ""}, r"model 0: model_id: must be 1 to 128"),
    ({"pipeline": "llm", "model_id": "a" * 129}, r"model 0: model_id: must be 1 to 128"),
    ({"pipeline": "llm", "model_id": "my model"}, r"model_id: .* printable ASCII without spaces"),
    ({"pipeline": "llm", "model_id": "modèle"}, r"model_id: .* printable ASCII"),
    ({"pipeline": "llm", "model_id": 7}, r"model_id: must be a string, not int"),
    ({"pipeline": "llm", "model_id": "a", "price_per_unit": "0.1USD"}, r"only prices in wei"),
    ({"pipeline": "llm", "model_id": "a", "price_per_unit": 0.5}, r"price_per_unit: 0.5; only"),
    ({"pipeline": "llm", "model_id": "a", "price_per_unit": -1}, r"price_per_unit: -1; only"),
    ({"pipeline": "llm", "model_id": "a", "currency": "USD"}, r"currency: 'USD'; only .* wei"),
    ({"pipeline": "llm", "model_id": "a", "pixels_per_unit": 0}, r"pixels_per_unit: must be"),
    ({"pipeline": "llm", "model_id": "a", "capacity": 0}, r"model 0: capacity: must be"),
    ({"pipeline": "llm", "model_id": "a", "warm": "yes"}, r"model 0: warm: must be true or"),
    ({"pipeline": "llm", "model_id": "a", "url": "http://x"}, r"url: external runners are not"),
    ({"pipeline": "llm", "model_id": "a", "token": "secret"}, r"token: external runners"),
    ({"pipeline": "llm", "model_id": "a", "prize": 1}, r"model 0: unknown field 'prize'"),
    ({"pipeline": "llm", "model_id": "a", "path": ""}, r"model 0: path: must be"),
    ("llm", r"model 0: must be an object, not str"),
]


@pytest.mark.parametrize(("entry", "message"), REFUSALS)
def test_unusable_model_entries_are_refused_by_index_and_field(
    tmp_path: Path, entry: object, message: str
) -> None:
    with pytest.raises(AiModelsError, match=message):
        load_ai_models(write_models(tmp_path, [entry]))


def test_unusable_model_files_are_refused(tmp_path: Path) -> None:
    one = {"pipeline": "llm", "model_id": "a"}
    with pytest.raises(AiModelsError, match=r"model 1: llm 'a' is listed twice"):
        load_ai_models(write_models(tmp_path, [one, one]))
    with pytest.raises(AiModelsError, match="must be a JSON list of models, not dict"):
        load_ai_models(write_models(tmp_path, one))
    many = [{"pipeline": "llm", "model_id": f"m{i}"} for i in range(MAX_AI_MODELS + 1)]
    with pytest.raises(AiModelsError, match=f"at most {MAX_AI_MODELS} are taken"):
        load_ai_models(write_models(tmp_path, many))
    huge = tmp_path / "huge.json"
    huge.write_text("[" + " " * (1 << 20) + "]")
    with pytest.raises(AiModelsError, match="larger than 1048576 bytes"):
        load_ai_models(huge)
    (tmp_path / "bad.json").write_text("[{")
    with pytest.raises(AiModelsError, match="not JSON"):
        load_ai_models(tmp_path / "bad.json")
    with pytest.raises(AiModelsError, match="cannot read it"):
        load_ai_models(tmp_path / "missing.json")
    assert issubclass(AiModelsError, ValueError)


# -- the pool, in this process ---------------------------------------------------------------


def test_outputs_come_in_order_and_usage_is_billed_in_process(model_dir: Path) -> None:
    models = open_models(model_dir, isolate=False)
    try:
        assert [m.model_id for m in models.offered()] == ["tests/echo", "tests/gather"]
        sink = echo(models, b"hello world!", piece=3)
        assert sink.outputs is not None and [o.name for o in sink.outputs] == ["echo", "pid"]
        assert [p for t, p in sink.pieces if t == 0] == [b"hel", b"lo ", b"wor", b"ld!"]
        assert sink.track(1) == str(os.getpid()).encode()
        stats = models.statistics()["test-echo"]["tests/echo"]
        assert stats["loaded"] and stats["device"] == "cpu" and stats["requests"] == 1
        assert stats["batches"] == 1 and stats["failures"] == 0
    finally:
        models.close()


def test_bad_requests_and_unknown_models_are_refused_before_running(model_dir: Path) -> None:
    models = open_models(model_dir, isolate=False)
    try:
        with pytest.raises(
            UnknownModelError,
            match=r"no test-echo model 'tests/elsewhere'.*"
            r"it has: test-echo 'tests/echo', test-gather 'tests/gather'",
        ):
            models.run("test-echo", "tests/elsewhere", BatchRequest(input=b"x"), Recorder())
        with pytest.raises(BadRequestError, match="the input is empty"):
            echo(models, b"")
        with pytest.raises(RequestTooLargeError, match="limit is 65536"):
            echo(models, b"x" * 65537)
        with pytest.raises(InvalidParamsError, match="piece must be >= 1"):
            echo(models, b"x", piece=0)
        with pytest.raises(BadRequestError, match="this input is refused"):
            echo(models, b"refuse")
        stats = models.statistics()["test-echo"]["tests/echo"]
        assert stats["refused"] == 4 and stats["batches"] == 1 and stats["failures"] == 0
    finally:
        models.close()


def test_concurrent_requests_with_one_key_run_as_one_batch_in_process(model_dir: Path) -> None:
    models = open_models(model_dir, isolate=False, batch_window=1.0)
    try:
        assert batch_sizes(gather_at_once(models, ["a"] * 4)) == [4, 4, 4, 4]
        assert sorted(batch_sizes(gather_at_once(models, ["a"] * 6))) == [2, 2, 4, 4, 4, 4]
        assert batch_sizes(gather_at_once(models, ["a", "b", "", ""])) == [1, 1, 1, 1]
        stats = models.statistics()["test-gather"]["tests/gather"]
        assert stats["largest_batch"] == 4 and stats["batches"] == 1 + 2 + 4
    finally:
        models.close()


def test_a_sink_that_raises_fails_only_its_own_request(model_dir: Path) -> None:
    models = open_models(model_dir, isolate=False, batch_window=1.0)
    outcomes: list[object] = [None, None]
    start = threading.Barrier(2)

    def call(index: int) -> None:
        sink = Recorder(fail_on_data=index == 0)
        start.wait()
        try:
            models.run("test-gather", "tests/gather", BatchRequest(params={"group": "g"}), sink)
            outcomes[index] = sink.track(0)
        except Exception as exc:
            outcomes[index] = exc

    try:
        threads = [threading.Thread(target=call, args=(i,)) for i in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
        assert isinstance(outcomes[0], ConnectionResetError)
        assert isinstance(outcomes[1], bytes) and outcomes[1].startswith(b"2 ")
    finally:
        models.close()


def test_capacity_bounds_the_calls_that_run_at_once_and_place_picks_devices(
    model_dir: Path,
) -> None:
    places = iter(["dev-a", "dev-b", "dev-c"])
    models = open_models(model_dir, isolate=False, capacity=2, place=lambda: next(places))
    try:
        started = time.monotonic()
        assert batch_sizes(gather_at_once(models, ["", ""], sleep=0.8)) == [1, 1]
        assert time.monotonic() - started < 1.5  # side by side, on two copies
        assert models.devices() == {"dev-a": 1, "dev-b": 1}
        assert models.statistics()["test-gather"]["tests/gather"]["devices"] == ["dev-a", "dev-b"]
    finally:
        models.close()
    models = open_models(model_dir, isolate=False, capacity=1)
    try:
        started = time.monotonic()
        assert batch_sizes(gather_at_once(models, ["", ""], sleep=0.8)) == [1, 1]
        assert time.monotonic() - started >= 1.6  # one after the other
    finally:
        models.close()


def test_warm_models_load_at_start_and_the_others_unload_when_idle(
    model_dir: Path, tmp_path: Path
) -> None:
    models = BatchModels(
        [
            AiModel(pipeline="test-echo", model_id="warm", path=str(model_dir), warm=True),
            AiModel(pipeline="test-echo", model_id="gone", path=str(tmp_path / "no"), warm=True),
            AiModel(pipeline="test-gather", model_id="cold", path=str(model_dir)),
        ],
        registry(),
        isolate=False,
        idle_timeout=10.0,
    )
    try:
        models.load_warm()
        stats = models.statistics()
        assert (
            stats["test-echo"]["warm"]["loaded"] and stats["test-echo"]["warm"]["problem"] is None
        )
        assert not stats["test-echo"]["gone"]["loaded"]
        assert "no model directory" in stats["test-echo"]["gone"]["problem"]
        assert not stats["test-gather"]["cold"]["loaded"]
        models.run("test-gather", "cold", BatchRequest(), Recorder())
        assert models.statistics()["test-gather"]["cold"]["loaded"]
        assert models.expire(time.monotonic()) == ()
        (expired,) = models.expire(time.monotonic() + 11.0)
        assert expired.model_id == "cold"
        stats = models.statistics()
        assert not stats["test-gather"]["cold"]["loaded"] and stats["test-echo"]["warm"]["loaded"]
        with pytest.raises(PipelineError, match="no model directory"):
            models.run("test-echo", "gone", BatchRequest(input=b"x"), Recorder())
    finally:
        models.close()


# -- the pool, in child processes ----------------------------------------------------------


def test_outputs_come_through_a_child_in_order(model_dir: Path) -> None:
    models = open_models(model_dir)
    try:
        sink = echo(models, bytes(range(256)) * 4, piece=100)
        assert sink.track(0) == bytes(range(256)) * 4
        assert [len(p) for t, p in sink.pieces if t == 0] == [100] * 10 + [24]
        pid = int(sink.track(1))
        assert pid != os.getpid()
        with pytest.raises(BadRequestError, match="this input is refused"):
            echo(models, b"refuse")
        assert int(echo(models).track(1)) == pid  # a refused request leaves the child alone
    finally:
        models.close()


def test_concurrent_requests_with_one_key_run_as_one_batch_in_a_child(model_dir: Path) -> None:
    models = open_models(model_dir, batch_window=1.0)
    try:
        results = gather_at_once(models, ["a"] * 4)
        assert batch_sizes(results) == [4, 4, 4, 4]
        assert isinstance(results[0], bytes) and int(results[0].split()[1]) != os.getpid()
        assert sorted(batch_sizes(gather_at_once(models, ["a", "b", "b", "c"]))) == [1, 1, 2, 2]
    finally:
        models.close()


def test_a_crash_fails_its_call_and_the_next_runs_after_the_back_off(model_dir: Path) -> None:
    models = open_models(model_dir)
    try:
        first = int(echo(models).track(1))
        with pytest.raises(
            PipelineError,
            match=r"'tests/echo': its process was killed by "
            r"SIGKILL; restarting in 0\.5 s",
        ):
            echo(models, crash=True)
        with pytest.raises(PipelineError, match="'tests/echo' is restarting"):
            echo(models)
        time.sleep(0.6)
        assert int(echo(models).track(1)) not in (first, os.getpid())
        stats = models.statistics()["test-echo"]["tests/echo"]
        assert stats["restarts"] == 1 and stats["failures"] == 2
    finally:
        models.close()


def test_a_call_past_its_deadline_is_killed(model_dir: Path) -> None:
    models = open_models(model_dir, request_deadline=1.0)
    try:
        echo(models)
        started = time.monotonic()
        with pytest.raises(PipelineError, match="did not finish its batch within 1 s"):
            echo(models, sleep=30.0)
        assert 0.9 < time.monotonic() - started < 5.0
        time.sleep(0.6)
        assert echo(models).track(0) == b"hello world!"
    finally:
        models.close()


def test_a_model_that_cannot_load_in_its_child_fails_its_requests(tmp_path: Path) -> None:
    models = BatchModels(
        [AiModel(pipeline="test-echo", model_id="gone", path=str(tmp_path / "no"), warm=True)],
        registry(),
    )
    try:
        models.load_warm()
        problem = models.statistics()["test-echo"]["gone"]["problem"]
        assert "test-echo model 'gone' could not be loaded: no model directory" in problem
        with pytest.raises(PipelineError, match="could not be loaded: no model directory"):
            models.run("test-echo", "gone", BatchRequest(input=b"x"), Recorder())
    finally:
        models.close()


def test_closing_ends_a_call_in_flight_and_refuses_later_ones(model_dir: Path) -> None:
    models = open_models(model_dir)
    outcome: list[BaseException] = []

    def call() -> None:
        try:
            echo(models, sleep=30.0)
        except BaseException as exc:
            outcome.append(exc)

    echo(models)  # loaded
    thread = threading.Thread(target=call)
    thread.start()
    time.sleep(0.3)
    started = time.monotonic()
    models.close()
    thread.join(10)
    assert time.monotonic() - started < 5.0
    assert len(outcome) == 1 and isinstance(outcome[0], PipelineError)
    assert "'tests/echo' was unloaded" in str(outcome[0])
    with pytest.raises(PipelineError, match="closed"):
        echo(models)


@pytest.mark.slow
def test_a_child_past_its_memory_limit_is_stopped(model_dir: Path) -> None:
    guardian = PipelineGuardian(first_backoff=0.2)
    runner = IsolatedBatchRunner(EchoPipeline, str(model_dir), guardian=guardian)
    request: Callable[..., BatchRequest] = lambda **p: EchoPipeline.checked(  # noqa: E731
        BatchRequest(params=p, input=b"abc")
    )
    try:
        runner.load()
        assert runner.pid is not None
        rss = resident_memory(runner.pid)
        assert rss is not None
        guardian.memory_limit = rss + 300 * 2**20  # room to work, not for the hoard
        (outcome,) = runner.run_batch([request(hoard_mib=600)], [Recorder()])
        assert isinstance(outcome, PipelineError)
        assert "past its limit of" in str(outcome)
        assert [f.kind for f in runner.failures] == [FailureKind.MEMORY]
        time.sleep(0.25)
        sink = Recorder()
        assert runner.run_batch([request()], [sink]) == [BatchUsage(units=(3, 0))]
        assert sink.track(0) == b"abc"
    finally:
        runner.close()
    models = open_models(model_dir, memory_limit=2**20)
    try:
        with pytest.raises(PipelineError, match=r"past its limit of 1 MiB"):
            echo(models)
    finally:
        models.close()
