"""The dev chain over HTTP JSON-RPC (``lpstream chain``): an ASGI app and its trio server.

How this works
--------------
``build_rpc_app`` answers ``POST /`` with JSON-RPC 2.0, single calls and batches, the way an
Ethereum node does, so web3, ethers or ``ChainClient.connect`` work against it. Each call goes to
``DevChain.handle_rpc`` in a thread under the chain's one limiter (eth-tester is not
thread-safe); a batch is one trip to the thread.

Only the methods a client of a public node uses are served (``ALLOWED_METHODS``): reads,
``eth_call``, ``eth_estimateGas``, ``eth_sendRawTransaction``, filters and logs, plus
``evm_mine`` for scripts that want to move rounds along. eth-tester's unlocked accounts are not
exposed (no ``eth_sendTransaction``, ``eth_accounts``, ``personal_*``): the first of them owns
the protocol.

Limits: a body above ``max_body_size`` is answered 413 before it is parsed; a batch above
``max_batch`` calls is an invalid request. The server has no authentication: the CLI binds it to
loopback unless told otherwise (``--allow-remote``).
"""

from __future__ import annotations

import functools
import itertools
import json
import logging
import re
from collections.abc import Sequence
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .devchain import DevChain

__all__ = [
    "ALLOWED_METHODS",
    "MAX_BATCH",
    "MAX_BODY_SIZE",
    "build_rpc_app",
    "serve_rpc",
]

logger = logging.getLogger(__name__)

MAX_BODY_SIZE = 1024 * 1024
"""The largest request body served (1 MiB); larger ones are answered 413."""

MAX_BATCH = 100
"""The most calls in one batch."""

ALLOWED_METHODS = frozenset(
    {
        "web3_clientVersion",
        "web3_sha3",
        "net_version",
        "net_listening",
        "net_peerCount",
        "eth_chainId",
        "eth_syncing",
        "eth_blockNumber",
        "eth_gasPrice",
        "eth_maxPriorityFeePerGas",
        "eth_feeHistory",
        "eth_getBalance",
        "eth_getCode",
        "eth_getStorageAt",
        "eth_getTransactionCount",
        "eth_getBlockByNumber",
        "eth_getBlockByHash",
        "eth_getBlockTransactionCountByNumber",
        "eth_getBlockTransactionCountByHash",
        "eth_getTransactionByHash",
        "eth_getTransactionByBlockNumberAndIndex",
        "eth_getTransactionByBlockHashAndIndex",
        "eth_getTransactionReceipt",
        "eth_call",
        "eth_estimateGas",
        "eth_sendRawTransaction",
        "eth_getLogs",
        "eth_newFilter",
        "eth_newBlockFilter",
        "eth_getFilterChanges",
        "eth_getFilterLogs",
        "eth_uninstallFilter",
        "evm_mine",
    }
)
"""The JSON-RPC methods served; anything else is "method not found"."""

_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602


def _error(request_id: Any, code: int, message: str) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "error": {"code": code, "message": message}}


def _answer_one(chain: DevChain, call: Any) -> dict[str, Any] | None:
    """The response to one call (None for a notification, which gets none). Blocking."""
    if not isinstance(call, dict):
        return _error(None, _INVALID_REQUEST, "invalid request: a call is a JSON object")
    request_id = call.get("id")
    notification = "id" not in call
    if call.get("jsonrpc") != "2.0":
        return _error(request_id, _INVALID_REQUEST, 'invalid request: "jsonrpc" must be "2.0"')
    if not isinstance(request_id, str | int | None) or isinstance(request_id, bool):
        return _error(None, _INVALID_REQUEST, 'invalid request: "id" must be a string or number')
    method = call.get("method")
    if not isinstance(method, str):
        return _error(request_id, _INVALID_REQUEST, 'invalid request: "method" must be a string')
    params = call.get("params", [])
    if not isinstance(params, list):
        return _error(request_id, _INVALID_PARAMS, 'invalid params: "params" must be an array')
    if method not in ALLOWED_METHODS:
        return _error(request_id, _METHOD_NOT_FOUND, f"the method {method} is not available")
    answer = chain.handle_rpc(method, params)
    if notification:
        return None
    return {"jsonrpc": "2.0", "id": request_id, **answer}


def _answer(chain: DevChain, calls: Sequence[Any]) -> list[dict[str, Any] | None]:
    return [_answer_one(chain, call) for call in calls]


async def _read_body(request: Request, limit: int) -> bytes | None:
    """The body, or None once it passes ``limit`` bytes (declared or received)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        return None
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


MAX_JSON_NESTING = 32
"""Deepest nesting of arrays and objects accepted in a request (JSON-RPC needs a few)."""

_JSON_STRING = re.compile(rb'"(?:[^"\\]++|\\.)*+"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")
_BRACKET_STEP = {ord("["): 1, ord("{"): 1, ord("]"): -1, ord("}"): -1}


def _json_nesting(body: bytes) -> int:
    """How deep arrays and objects nest in ``body`` (brackets inside strings do not count)."""
    brackets = _JSON_STRING.sub(b"", body).translate(None, _NOT_BRACKETS)
    return max(itertools.accumulate(_BRACKET_STEP[b] for b in brackets), default=0)


def build_rpc_app(
    dev_chain: DevChain,
    limiter: trio.CapacityLimiter,
    *,
    max_body_size: int = MAX_BODY_SIZE,
    max_batch: int = MAX_BATCH,
) -> Starlette:
    """The ASGI app serving ``dev_chain`` over JSON-RPC at ``POST /``.

    Args:
        dev_chain: the chain.
        limiter: the chain's one limiter: every chain call runs in a thread under it.
        max_body_size: bytes; a larger body is answered 413.
        max_batch: the most calls in one batch.
    """

    async def endpoint(request: Request) -> Response:
        body = await _read_body(request, max_body_size)
        if body is None:
            return JSONResponse(
                _error(None, _INVALID_REQUEST, f"request body above {max_body_size} bytes"),
                status_code=413,
            )
        if _json_nesting(body) > MAX_JSON_NESTING:
            # json recurses per level and py_ecc (imported with web3) raises the recursion
            # limit to 100000, past what the C stack holds: refuse deep nesting unparsed.
            return JSONResponse(
                _error(None, _INVALID_REQUEST, f"nested deeper than {MAX_JSON_NESTING} levels")
            )
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            return JSONResponse(_error(None, _PARSE_ERROR, f"parse error: {exc}"))
        if isinstance(payload, list):
            if not payload:
                return JSONResponse(_error(None, _INVALID_REQUEST, "invalid request: empty batch"))
            if len(payload) > max_batch:
                return JSONResponse(
                    _error(None, _INVALID_REQUEST, f"invalid request: batch above {max_batch}")
                )
            answers = await trio.to_thread.run_sync(
                functools.partial(_answer, dev_chain, payload), limiter=limiter
            )
            present = [a for a in answers if a is not None]
            return JSONResponse(present) if present else Response(status_code=204)
        answer = await trio.to_thread.run_sync(
            functools.partial(_answer_one, dev_chain, payload), limiter=limiter
        )
        return JSONResponse(answer) if answer is not None else Response(status_code=204)

    return Starlette(routes=[Route("/", endpoint, methods=["POST"])])


async def serve_rpc(
    app: Any,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serves ``app`` with hypercorn on ``host:port`` until cancelled.

    Reports the URL it listens on (``http://HOST:PORT/``, the real port when ``port`` is 0)
    through ``task_status``.
    """
    config = HypercornConfig()
    config.bind = [f"[{host}]:{port}" if ":" in host else f"{host}:{port}"]
    config.accesslog = None
    config.errorlog = logger
    config.graceful_timeout = 1.0

    class _Status:
        def started(self, binds: Sequence[str] | None = None) -> None:
            bound = (binds or [f"http://{host}:{port}"])[0]
            task_status.started(bound.rstrip("/") + "/")

    await hypercorn_serve(app, config, shutdown_trigger=trio.sleep_forever, task_status=_Status())
