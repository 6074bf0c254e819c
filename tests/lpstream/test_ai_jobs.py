"""Batch AI jobs through real orchestrators on loopback QUIC (off chain): the gateway's
dispatch, the wire, the orchestrator's placement and the worker's pool, with small real
pipelines (``tests.workers.batch_test_pipelines``) in real child processes.

What is checked: outputs arrive piece by piece, in order, as the pipeline sends them, and the
units billed travel in the SUMMARY; the request's own errors (bad input, a model nobody
offers) are 400s that no other orchestrator is asked about; an orchestrator whose worker
crashes before any output is left for the next one, which answers; and one whose output has
started is never replaced (the client would get two answers).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest
import trio

from lpstream.config import HostPort
from lpstream.errors import BusyError, ProtocolError
from lpstream.gateway.ai_dispatch import AiDispatch
from lpstream.gateway.ai_jobs import AiJobRequest
from lpstream.gateway.ai_prices import AiPriceLimits, parse_max_prices
from lpstream.gateway.orchestrators import OrchestratorPool
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.quic import serve_quic
from lpstream.wire import AiModelOffer, Rendition
from lpstream.worker.batch import BatchJobs
from lpstream.worker.local import LocalWorker
from tests.workers.batch_test_pipelines import EchoPipeline
from workers.batch import AiModel, BatchModels, BatchRegistry

MODEL = "test/echo"


class Recorder:
    """A relay that keeps what reaches the client, in order."""

    def __init__(self) -> None:
        self.renditions: list[Rendition] = []
        self.pieces: list[tuple[int, bytes]] = []

    async def start(self, renditions: Sequence[Rendition]) -> None:
        self.renditions = list(renditions)

    async def data(self, track: int, payload: bytes) -> None:
        self.pieces.append((track, payload))


async def start_orchestrator(
    nursery: trio.Nursery, folder: Path, *, price: int = 0, isolate: bool = False
) -> tuple[HostPort, Orchestrator]:
    registry = BatchRegistry(builtins=False, entry_points=False)
    registry.register(EchoPipeline)
    await trio.Path(folder).mkdir(exist_ok=True)
    model = AiModel(pipeline="test-echo", model_id=MODEL, path=str(folder), price_per_unit=price)
    models = BatchModels([model], registry, isolate=isolate, batch_window=0.0)
    worker = LocalWorker(capacity=1, batch=BatchJobs(models=models))

    orch = Orchestrator(
        secret="",
        metrics=Metrics(),
        local=worker,
        ai_prices=(AiModelOffer(capability="test-echo", model_id=MODEL, price_per_unit=price),),
    )
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    return HostPort("127.0.0.1", port), orch


def echo_request(data: bytes, **params: str | int | float | bool) -> AiJobRequest:
    return AiJobRequest(
        capability="test-echo", model_id=MODEL, params=params, input=data, units=len(data)
    )


async def dispatch_to(nursery: trio.Nursery, *addresses: HostPort) -> AiDispatch:
    pool = OrchestratorPool(list(addresses))
    await nursery.start(pool.run)
    return AiDispatch(connections=pool.connections, terms=pool.terms)


async def test_outputs_stream_back_in_order_with_their_units(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    address, _ = await start_orchestrator(nursery, tmp_path / "m")
    dispatch = await dispatch_to(nursery, address)
    [offer] = dispatch.offered_models()
    assert (offer.capability, offer.model_id, offer.orchestrators) == ("test-echo", MODEL, 1)
    relay = Recorder()
    outcome = await dispatch.run_ai_job(echo_request(b"abcdefghij", piece=4), relay)
    assert [r.name for r in relay.renditions] == ["echo", "pid"]
    assert relay.pieces[:3] == [(0, b"abcd"), (0, b"efgh"), (0, b"ij")]
    assert [o.info.pixels for o in outcome.outputs] == [10, 0]
    assert outcome.units == 10 and outcome.orchestrator == str(address)
    assert outcome.outputs[0].data == b"abcdefghij"


async def test_the_requests_own_errors_are_400s_and_go_nowhere_else(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    first, orch_a = await start_orchestrator(nursery, tmp_path / "a")
    second, orch_b = await start_orchestrator(nursery, tmp_path / "b")
    dispatch = await dispatch_to(nursery, first, second)
    with pytest.raises(ProtocolError) as refused:
        await dispatch.run_ai_job(echo_request(b"refuse"), Recorder())
    assert refused.value.code == 400 and "refused" in str(refused.value)
    with pytest.raises(ProtocolError) as unknown:
        await dispatch.run_ai_job(
            AiJobRequest(capability="test-echo", model_id="nobody/has", params={}, units=1),
            Recorder(),
        )
    assert unknown.value.code == 400 and MODEL in str(unknown.value)
    # Only one orchestrator heard the refused request; neither was suspended for it.
    assert sorted(o.status().jobs_in_flight for o in (orch_a, orch_b)) == [0, 0]
    assert all(o.failures == 0 for o in dispatch.connections.orchestrators)


async def test_a_worker_failing_before_any_output_moves_the_job(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    # The cheaper orchestrator is tried first; its model cannot load (its folder is gone).
    cheap, _ = await start_orchestrator(nursery, tmp_path / "c", price=1, isolate=True)
    await trio.Path(tmp_path / "c").rmdir()
    dear, _ = await start_orchestrator(nursery, tmp_path / "d", price=2, isolate=True)
    dispatch = await dispatch_to(nursery, cheap, dear)
    relay = Recorder()
    with trio.fail_after(60):
        outcome = await dispatch.run_ai_job(echo_request(b"hello", piece=2), relay)
    assert outcome.orchestrator == str(dear)
    assert [p for t, p in relay.pieces if t == 0] == [b"he", b"ll", b"o"]
    by_key = {o.key: o for o in dispatch.connections.orchestrators}
    assert by_key[str(cheap)].failures == 1 and by_key[str(dear)].failures == 0
    # The failed one is passed over while suspended: the next request goes straight on.
    again = await dispatch.run_ai_job(echo_request(b"again"), Recorder())
    assert again.orchestrator == str(dear)


async def test_output_that_has_started_is_never_moved(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    first, _ = await start_orchestrator(nursery, tmp_path / "e", price=1)
    second, _ = await start_orchestrator(nursery, tmp_path / "f", price=2)
    dispatch = await dispatch_to(nursery, first, second)

    class Leaving(Recorder):
        async def data(self, track: int, payload: bytes) -> None:
            await super().data(track, payload)
            raise trio.BrokenResourceError("the client left")

    relay = Leaving()
    with pytest.raises(trio.BrokenResourceError):
        await dispatch.run_ai_job(echo_request(b"abcdef", piece=1), relay)
    assert relay.pieces == [(0, b"a")]  # one answer began, and no second one


async def test_prices_above_the_limit_leave_a_model_unoffered(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    address, _ = await start_orchestrator(nursery, tmp_path / "p", price=5)
    dispatch = await dispatch_to(nursery, address)
    assert [m.price_per_unit for m in dispatch.offered_models()] == [5]
    dispatch.limits = parse_max_prices(
        '{"capabilities_prices": [{"pipeline": "test-echo", "price_per_unit": 4}]}'
    )
    assert dispatch.offered_models() == []
    with pytest.raises(BusyError, match="above the maximum 4"):
        await dispatch.run_ai_job(echo_request(b"x"), Recorder())
    dispatch.limits = AiPriceLimits()
    outcome = await dispatch.run_ai_job(echo_request(b"x"), Recorder())
    assert outcome.units == 1


async def test_a_remote_workers_models_are_offered_and_run_there(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    from lpstream.worker.remote import run_remote_worker

    registry = BatchRegistry(builtins=False, entry_points=False)
    registry.register(EchoPipeline)
    await trio.Path(tmp_path / "r").mkdir()
    model = AiModel(pipeline="test-echo", model_id=MODEL, path=str(tmp_path / "r"))
    remote = LocalWorker(
        capacity=1, batch=BatchJobs(models=BatchModels([model], registry, isolate=False))
    )
    price = AiModelOffer(capability="test-echo", model_id=MODEL, price_per_unit=3)
    orch = Orchestrator(secret="s3cret", metrics=Metrics(), local=None, ai_prices=(price,))
    _, port = await nursery.start(serve_quic, "127.0.0.1", 0, orch.handle_connection)
    address = HostPort("127.0.0.1", port)
    assert orch.ai.offers(orch.pool) == ()  # no worker runs it yet
    await nursery.start(run_remote_worker, address, "s3cret", remote)
    [offer] = orch.ai.offers(orch.pool)
    assert (offer.model_id, offer.price_per_unit) == (MODEL, 3)
    dispatch = await dispatch_to(nursery, address)
    relay = Recorder()
    outcome = await dispatch.run_ai_job(echo_request(b"far away", piece=3), relay)
    assert [p for t, p in relay.pieces if t == 0] == [b"far", b" aw", b"ay"]
    assert outcome.units == 8
