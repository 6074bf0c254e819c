"""The dev chain: start-up, its block clock, and its JSON-RPC server over real HTTP."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio

from payments.chain.client import ChainClient, ChainError
from payments.chain.contracts import ProtocolParameters, contract_at
from payments.chain.devchain import DevChain, dev_key
from payments.chain.rpc import build_rpc_app, serve_rpc

ETH = 10**18
FAST = ProtocolParameters(round_length=4)


@pytest.fixture(scope="module")
def dev() -> DevChain:
    return DevChain.start(parameters=FAST, accounts=2, funds=10 * ETH)


def test_start_deploys_funds_the_dev_keys_and_initializes_the_round(dev: DevChain) -> None:
    assert [k.address for k in dev.keys] == [dev_key(0).address, dev_key(1).address]
    assert dev_key(0, "other").address != dev_key(0).address
    reader = dev.client()
    assert all(reader.balance(k.address) == 10 * ETH for k in dev.keys)
    assert reader.controller == dev.controller
    assert reader.contract_address("TicketBroker") == dev.addresses["TicketBroker"]
    assert reader.snapshot().current_round_initialized


def test_mine_moves_the_head(dev: DevChain) -> None:
    head = dev.latest_block()
    assert dev.mine(3) == head + 3


async def test_run_blocks_mines_on_a_timer_and_initializes_each_round() -> None:
    chain = DevChain.start(parameters=FAST, accounts=0)
    limiter = trio.CapacityLimiter(1)
    reader = chain.client()
    start = await trio.to_thread.run_sync(reader.snapshot, limiter=limiter)
    async with trio.open_nursery() as nursery:
        await nursery.start(chain.run_blocks, 0.01, limiter)
        with trio.fail_after(20):
            while True:
                now = await trio.to_thread.run_sync(reader.snapshot, limiter=limiter)
                if now.current_round >= start.current_round + 2:
                    break
                await trio.sleep(0.02)
        nursery.cancel_scope.cancel()
    # Each round was initialized as it began (the clock mines one block at a time).
    rounds = contract_at(chain.w3, "RoundsManager", chain.addresses["RoundsManager"])
    for r in range(start.current_round, now.current_round):
        assert bytes(rounds.functions.blockHashForRound(r).call()) != bytes(32), r


@pytest.fixture
async def rpc_url(dev: DevChain) -> AsyncIterator[str]:
    limiter = trio.CapacityLimiter(1)
    async with trio.open_nursery() as nursery:
        url: str = await nursery.start(serve_rpc, build_rpc_app(dev, limiter), "127.0.0.1", 0)
        yield url
        nursery.cancel_scope.cancel()


def post(url: str, body: bytes) -> tuple[int, Any]:
    """POSTs ``body`` as JSON (blocking); returns the status and the decoded answer."""
    request = urllib.request.Request(
        url, data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, data = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, data = exc.code, exc.read()
    return status, json.loads(data) if data else None


async def test_a_client_over_http_deposits_and_reads_it_back(dev: DevChain, rpc_url: str) -> None:
    key = dev.keys[1]

    def deposit_and_read() -> tuple[int, str]:
        client = ChainClient.connect(rpc_url, controller=dev.controller, key=key)
        client.fund_deposit(ETH // 2)
        try:
            client.withdraw()
        except ChainError as exc:  # the revert reason crosses HTTP
            reason = exc.reason or ""
        return client.sender_info(key.address).deposit, reason

    deposit, reason = await trio.to_thread.run_sync(deposit_and_read)
    assert deposit == ETH // 2
    assert reason == "no unlock request in progress"


async def test_json_rpc_single_batch_and_errors(rpc_url: str) -> None:
    def call(body: bytes) -> tuple[int, Any]:
        return post(rpc_url, body)

    status, answer = await trio.to_thread.run_sync(
        call, b'{"jsonrpc": "2.0", "id": 7, "method": "eth_blockNumber", "params": []}'
    )
    assert status == 200 and answer["id"] == 7 and answer["result"].startswith("0x")

    batch = [
        {"jsonrpc": "2.0", "id": 1, "method": "eth_chainId"},
        {"jsonrpc": "2.0", "id": 2, "method": "eth_sendTransaction", "params": [{}]},
        {"jsonrpc": "2.0", "id": 3, "method": "eth_getBalance", "params": ["0xzz", "latest"]},
        {"jsonrpc": "2.0", "method": "eth_blockNumber"},  # a notification: no answer
    ]
    status, answers = await trio.to_thread.run_sync(call, json.dumps(batch).encode())
    assert status == 200 and [a["id"] for a in answers] == [1, 2, 3]
    assert answers[0]["result"] == hex(131277322940537)
    assert answers[1]["error"]["code"] == -32601  # unlocked accounts are not served
    assert "error" in answers[2]

    status, answer = await trio.to_thread.run_sync(call, b'{"jsonrpc": "2.0", "id": 1, ')
    assert status == 200 and answer["error"]["code"] == -32700 and answer["id"] is None

    status, answer = await trio.to_thread.run_sync(call, b"[]")
    assert answer["error"]["code"] == -32600

    status, answer = await trio.to_thread.run_sync(call, b'{"id": 1, "method": "eth_chainId"}')
    assert answer["error"]["code"] == -32600  # no "jsonrpc": "2.0"


async def test_an_oversized_body_is_refused_with_413(rpc_url: str) -> None:
    status, answer = await trio.to_thread.run_sync(post, rpc_url, b" " * (1024 * 1024 + 1))
    assert status == 413 and answer["error"]["code"] == -32600


def test_handle_rpc_answers_as_a_node_does(dev: DevChain) -> None:
    block = dev.handle_rpc("eth_getBlockByNumber", ["latest", False])["result"]
    assert block["number"].startswith("0x") and len(block["logsBloom"]) == 2 + 512
    assert dev.handle_rpc("eth_nothing", [])["error"]["code"] == -32601
    assert dev.handle_rpc("eth_getBalance", [])["error"]["code"] == -32602
    call = {"to": dev.addresses["TicketBroker"], "data": "0x3ccfd60b"}  # withdraw()
    error = dev.handle_rpc("eth_call", [call, "latest"])["error"]
    assert error["code"] == 3
    assert error["message"] == "execution reverted: sender deposit and reserve are zero"
    assert error["data"].startswith("0x08c379a0")


async def test_deeply_nested_json_is_refused_without_parsing(rpc_url: str) -> None:
    # py_ecc raises the recursion limit to 100000: json.loads on this would overflow the C stack.
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "eth_call", "params": ' + b"[" * 200_000
    status, answer = await trio.to_thread.run_sync(post, rpc_url, body)
    assert status == 200 and answer["error"]["code"] == -32600
    assert "nested deeper than 32 levels" in answer["error"]["message"]
    status, answer = await trio.to_thread.run_sync(
        post, rpc_url, b'{"jsonrpc": "2.0", "id": 2, "method": "eth_blockNumber", "params": []}'
    )
    assert answer["result"].startswith("0x")  # the chain is still serving
