"""``lpstream account set-price`` and ``/api/orchestrator/price``: the orchestrator's price,
changed on a running node through its API token.

The route runs in the real app on a real HTTP server, over a real orchestrator whose payments
check tickets on the embedded chain; its new price is what the orchestrator's ORCH_INFO offers
from then on. The slow test changes the price of a paid ``lpstream dev`` with the command and
sees it in ``/api/status`` and in what its gateway makes of the orchestrator's info.
"""

from __future__ import annotations

import functools
import json
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import trio
from click.testing import CliRunner, Result

from lpstream.access import SecretSet
from lpstream.account import account
from lpstream.chainwatch import ChainWatch
from lpstream.errors import ProtocolError
from lpstream.http.app import build_app
from lpstream.http.orchestrator_admin import PRICE_PATH, price_from_json
from lpstream.http.status import status_json
from lpstream.metrics import Metrics
from lpstream.orchestrator.orchestrator import Orchestrator
from lpstream.orchestrator.payments import PaymentReceiver
from payments.chain import DevChain
from payments.store import TicketStore
from tests.access.client import call
from tests.asgi import serve_on_loopback
from tests.e2e.nodes import http_get, start_dev, wait_for

TOKEN = "set-price-token-for-tests"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


@pytest.mark.parametrize(
    ("body", "price"),
    [
        ({"price_per_unit": 5}, Fraction(5)),
        ({"price_per_unit": 10, "pixels_per_unit": 4}, Fraction(5, 2)),
        ({"price_per_unit": 0, "pixels_per_unit": 7}, Fraction(0)),
        ({"price_per_unit": 2**63 - 1, "pixels_per_unit": 2**63 - 1}, Fraction(1)),
    ],
)
def test_a_price_is_whole_wei_per_whole_pixels(body: dict[str, Any], price: Fraction) -> None:
    assert price_from_json(body) == price


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({}, "price_per_unit: required"),
        ({"price_per_unit": -1}, "price_per_unit: a whole number from 0"),
        ({"price_per_unit": 1.5}, "price_per_unit: a whole number"),
        ({"price_per_unit": "5"}, "price_per_unit: a whole number"),
        ({"price_per_unit": True}, "price_per_unit: a whole number"),
        ({"price_per_unit": 2**63}, "price_per_unit: a whole number"),
        ({"price_per_unit": 1, "pixels_per_unit": 0}, "pixels_per_unit: a whole number from 1"),
        ({"price_per_unit": 1, "pixels_per_unit": None}, "pixels_per_unit: required"),
        ({"price": 5}, "unknown field 'price'"),
    ],
)
def test_a_bad_price_is_400_naming_the_field(body: dict[str, Any], named: str) -> None:
    with pytest.raises(ProtocolError) as refused:
        price_from_json(body)
    assert refused.value.code == 400
    assert str(refused.value).startswith(named)


@pytest.fixture(scope="module")
def dev_chain() -> DevChain:
    return DevChain.start(accounts=1)


@pytest.fixture
def paid_orchestrator(dev_chain: DevChain, tmp_path: Path) -> Iterator[Orchestrator]:
    key = dev_chain.keys[0]
    store = TicketStore(tmp_path / "tickets.sqlite")
    receiver = PaymentReceiver(
        address=key.address,
        signing_key=key.private_key,
        watch=ChainWatch(chain=dev_chain.client(key), limiter=trio.CapacityLimiter(1)),
        store=store,
        store_limiter=trio.CapacityLimiter(1),
        price=Fraction(1),
    )
    yield Orchestrator(secret="s", metrics=Metrics(), payments=receiver)
    store.close()


async def serve(nursery: trio.Nursery, orchestrator: Orchestrator) -> int:
    app = build_app(
        playback=None,
        status=dict,
        metrics=Metrics(),
        api_tokens=SecretSet.of("api", [TOKEN], flag="--api-token"),
        orchestrator_admin=orchestrator,
    )
    port: int = await nursery.start(serve_on_loopback, app)
    return port


def set_price(args: list[str], env: dict[str, str]) -> Result:
    return CliRunner().invoke(account, ["set-price", *args], env=env, catch_exceptions=False)


async def test_the_price_set_is_what_orch_info_offers(
    nursery: trio.Nursery, paid_orchestrator: Orchestrator
) -> None:
    port = await serve(nursery, paid_orchestrator)
    body = json.dumps({"price_per_unit": 10, "pixels_per_unit": 4}).encode()
    refused = await call(port, "POST", PRICE_PATH, body=body)
    assert refused.status == 401
    assert (await paid_orchestrator.info()).price_per_unit == 1

    shown = await call(port, "GET", PRICE_PATH, headers=BEARER)
    assert shown.status == 200
    assert json.loads(shown.body) == {"price": {"wei": "1", "pixels": 1, "wei_per_pixel": 1.0}}
    answer = await call(port, "POST", PRICE_PATH, headers=BEARER, body=body)
    assert answer.status == 200, answer.text
    assert json.loads(answer.body) == {
        "price": {"wei": "5", "pixels": 2, "wei_per_pixel": 2.5},
        "previous": {"wei": "1", "pixels": 1, "wei_per_pixel": 1.0},
    }
    info = await paid_orchestrator.info()
    assert (info.price_per_unit, info.pixels_per_unit) == (5, 2)
    status = status_json(paid_orchestrator.status())
    assert status["payments"]["price_per_pixel"] == {"wei": "5", "pixels": 2, "wei_per_pixel": 2.5}

    bad = await call(port, "POST", PRICE_PATH, headers=BEARER, body=b'{"price_per_unit": -3}')
    assert bad.status == 400 and "price_per_unit" in json.loads(bad.body)["error"]
    not_json = await call(port, "POST", PRICE_PATH, headers=BEARER, body=b"price=3")
    assert not_json.status == 400
    huge = await call(port, "POST", PRICE_PATH, headers=BEARER, body=b" " * 2048)
    assert huge.status == 413
    assert (await paid_orchestrator.info()).price_per_unit == 5, "a refused price changes nothing"

    # The command, as an operator runs it (blocking: in a thread, while this loop serves).
    env = {"LPSTREAM_NODE_URL": f"http://127.0.0.1:{port}", "LPSTREAM_API_TOKEN": TOKEN}
    result = await trio.to_thread.run_sync(functools.partial(set_price, ["7gwei"], env))
    assert result.exit_code == 0, result.output
    assert result.stdout == "price set: 7000000000 wei per pixel (was 5 wei per 2 pixels)\n"
    assert (await paid_orchestrator.info()).price_per_unit == 7 * 10**9
    anonymous = {"LPSTREAM_NODE_URL": env["LPSTREAM_NODE_URL"]}
    denied = await trio.to_thread.run_sync(functools.partial(set_price, ["1"], anonymous))
    assert denied.exit_code == 1
    assert "HTTP 401: an API token is required" in denied.output
    assert "LPSTREAM_API_TOKEN" in denied.output


async def test_an_orchestrator_off_chain_has_no_price_to_set(nursery: trio.Nursery) -> None:
    port = await serve(nursery, Orchestrator(secret="s", metrics=Metrics()))
    for method in ("GET", "POST"):
        answer = await call(port, method, PRICE_PATH, headers=BEARER, body=b'{"price_per_unit": 1}')
        assert answer.status == 409
        assert "off chain" in json.loads(answer.body)["error"]


def test_an_unreachable_node_is_a_clear_error() -> None:
    with socket.socket() as listener:  # a port nobody listens on once it is closed
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    result = set_price(["1"], {"LPSTREAM_NODE_URL": f"http://127.0.0.1:{port}"})
    assert result.exit_code == 1
    assert f"cannot reach http://127.0.0.1:{port}{PRICE_PATH}: " in result.output
    assert "Traceback" not in result.output


@pytest.mark.slow
def test_set_price_changes_a_running_dev_nodes_price(tmp_path: Path) -> None:
    node = start_dev(
        tmp_path,
        "--block-time=0.1",
        "--price-per-unit=1",
        "--max-price-per-unit=10",
        f"--api-token={TOKEN}",
        name="dev-set-price",
        offchain=False,
        ready_timeout=90,
    )
    try:
        base = node.url("http")
        env = {"LPSTREAM_NODE_URL": base, "LPSTREAM_API_TOKEN": TOKEN}

        def status() -> Any:
            code, body = http_get_with_token(f"{base}/api/status")
            assert code == 200, body
            return json.loads(body)

        def refusal() -> str:
            (orch,) = status()["orchestrators"]
            return str(orch["refused"])

        assert status()["orchestrator"]["payments"]["price_per_pixel"]["wei"] == "1"
        assert wait_for(lambda: status()["orchestrators"][0]["answered"], 30, "the orch info")
        assert refusal() == ""

        denied = set_price(["20"], {"LPSTREAM_NODE_URL": base})
        assert denied.exit_code == 1 and "HTTP 401" in denied.output
        assert http_get(f"{base}/api/status")[0] == 401
        assert status()["orchestrator"]["payments"]["price_per_pixel"]["wei"] == "1"

        raised = set_price(["20"], env)
        assert raised.exit_code == 0, raised.output
        assert raised.stdout == "price set: 20 wei per pixel (was 1 wei per pixel)\n"
        price = status()["orchestrator"]["payments"]["price_per_pixel"]
        assert price == {"wei": "20", "pixels": 1, "wei_per_pixel": 20.0}
        # The gateway reads the new price in the orchestrator's next info and, above its
        # --max-price-per-unit, offers it no more work.
        said = wait_for(lambda: "above the maximum" in refusal() and refusal(), 30, "refusal")
        assert said == "price 20 wei/pixel above the maximum 10"

        lowered = set_price(["15", "--pixels-per-unit", "2"], env)
        assert lowered.exit_code == 0, lowered.output
        assert lowered.stdout == "price set: 15 wei per 2 pixels (was 20 wei per pixel)\n"
        wait_for(lambda: refusal() == "", 30, "the orchestrator offered work again")
    finally:
        assert node.stop() == 0, node.log_path.read_text()[-3000:]


def http_get_with_token(url: str) -> tuple[int, bytes]:
    request = urllib.request.Request(url, headers=BEARER)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()
