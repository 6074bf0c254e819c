"""``lpstream account set-price``: a running orchestrator's price, changed through its API.

The orchestrator's admin HTTP (its ``--http-addr``; in ``lpstream dev`` the gateway's port)
takes ``POST /api/orchestrator/price`` (:mod:`lpstream.http.orchestrator_admin`) behind the API
token; the new price is in its ORCH_INFO from then on. Nothing here touches the chain: the
price is the node's offer, not a contract's state, and a restart goes back to
``--price-per-unit``.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import click

from lpstream.cliopts import option

from .amounts import wei_argument

__all__ = ["REQUEST_TIMEOUT", "describe_price", "post_price", "set_price"]

REQUEST_TIMEOUT = 10.0
"""Seconds the node has to answer."""
_MAX_ANSWER = 64 * 1024


def _reason(body: bytes) -> str:
    try:
        document = json.loads(body)
    except ValueError:
        document = None
    if isinstance(document, dict) and isinstance(document.get("error"), str):
        return str(document["error"])
    lines = body.decode("utf-8", errors="replace").strip().splitlines()
    return lines[0][:200] if lines else ""


def post_price(
    node_url: str, api_token: str | None, price_per_unit: int, pixels_per_unit: int
) -> dict[str, Any]:
    """Sets the price of the orchestrator at ``node_url``; its JSON answer (blocking).

    Raises:
        click.ClickException: the node cannot be reached or refuses (its status and reason).
    """
    # Imported here: the HTTP stack loads only when a command runs (as the chain's modules).
    from lpstream.http.orchestrator_admin import PRICE_PATH

    url = node_url.rstrip("/") + PRICE_PATH
    if not url.startswith(("http://", "https://")):
        raise click.BadParameter("an http:// or https:// URL", param_hint="--node-url")
    body = json.dumps({"price_per_unit": price_per_unit, "pixels_per_unit": pixels_per_unit})
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if api_token:
        headers["Authorization"] = f"Bearer {api_token}"
    request = urllib.request.Request(url, data=body.encode(), headers=headers, method="POST")
    # The node is the operator's own: no proxy from the environment stands in between.
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=REQUEST_TIMEOUT) as response:
            answer = json.loads(response.read(_MAX_ANSWER))
    except urllib.error.HTTPError as exc:
        reason = _reason(exc.read(_MAX_ANSWER))
        hint = (
            " (give the node's API token: --api-token or LPSTREAM_API_TOKEN)"
            if exc.code == 401
            else ""
        )
        raise click.ClickException(f"{url}: HTTP {exc.code}: {reason}{hint}") from None
    except (urllib.error.URLError, OSError) as exc:
        why = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise click.ClickException(f"cannot reach {url}: {why}") from None
    except ValueError:
        raise click.ClickException(f"{url}: the answer is not JSON") from None
    if not isinstance(answer, dict) or not isinstance(answer.get("price"), dict):
        raise click.ClickException(f"{url}: unexpected answer {str(answer)[:200]}")
    return answer


def describe_price(price: dict[str, Any]) -> str:
    """``5 wei per pixel`` or ``3 wei per 1000 pixels``, from a price as the API shows it."""
    pixels = int(price["pixels"])
    return f"{price['wei']} wei per {'pixel' if pixels == 1 else f'{pixels} pixels'}"


@click.command("set-price")
@click.argument("price_per_unit", metavar="PRICE_PER_UNIT", callback=wei_argument)
@option(
    "--pixels-per-unit",
    type=click.IntRange(min=1),
    default=1,
    help="Pixels PRICE_PER_UNIT pays for.",
)
@option(
    "--node-url",
    default="http://127.0.0.1:8935",
    help="The orchestrator's admin HTTP: its --http-addr (lpstream dev: the gateway's).",
)
@option(
    "--api-token",
    default=None,
    help="The node's API token; without one, only a node that has none answers, over "
    "loopback. Prefer the variable to the flag: flags show in the process list.",
)
def set_price(
    price_per_unit: int, pixels_per_unit: int, node_url: str, api_token: str | None
) -> None:
    """Set a running orchestrator's price: PRICE_PER_UNIT wei per --pixels-per-unit pixels.

    PRICE_PER_UNIT is wei, or a number with a unit (2gwei). Gateways see the new price in the
    orchestrator's info from then on; a restart goes back to --price-per-unit.
    """
    answer = post_price(node_url, api_token, price_per_unit, pixels_per_unit)
    was = answer.get("previous")
    previous = f" (was {describe_price(was)})" if isinstance(was, dict) else ""
    click.echo(f"price set: {describe_price(answer['price'])}{previous}")
