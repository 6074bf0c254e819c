"""The orchestrator's admin API: its price, changed on a running node.

* ``GET /api/orchestrator/price`` answers ``{"price": {"wei": "<n>", "pixels": <d>,
  "wei_per_pixel": <float>}}``, the price as ``/api/status`` shows it.
* ``POST /api/orchestrator/price`` with ``{"price_per_unit": N, "pixels_per_unit": M}``
  (``pixels_per_unit`` optional, default 1, as ``--pixels-per-unit``) sets the price to N wei
  per M pixels and answers ``{"price": …, "previous": …}``. Both are whole numbers that the
  wire's ORCH_INFO carries (at most 2^63 - 1; N may be 0, M at least 1); any other field, or
  a value that is not such a number, is 400. An orchestrator off chain works for free and has
  no price: 409.

From the answer on, the new price is what the orchestrator's ORCH_INFO offers and its ticket
parameters are made for, and what the work it takes is billed at. A payment made under
parameters issued at a lower price is refused (402, as any payment expecting less than the
price), so gateways paying at the old price take fresh parameters; one paying at a higher
price is credited as before. Like every ``/api/*`` route it sits behind the API token; the
orchestrator serves it on its ``--http-addr`` (``lpstream dev``: the gateway's port).
``lpstream account set-price`` is its client.
"""

from __future__ import annotations

import logging
from fractions import Fraction
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from lpstream.errors import LpstreamError, ProtocolError
from lpstream.http.ai import json_error, load_json_object
from lpstream.http.api_guard import request_identity
from lpstream.http.limits import BodyReader
from lpstream.http.status import status_json
from lpstream.wire.fields import MAX_INT64
from payments.pm import PixelPrice

__all__ = [
    "MAX_BODY",
    "PRICE_PATH",
    "OrchestratorPricing",
    "PriceHolder",
    "orchestrator_admin_routes",
    "price_from_json",
]

log = logging.getLogger("lpstream.orchestrator")

PRICE_PATH = "/api/orchestrator/price"
"""Where the price is read and set."""
MAX_BODY = 1024
"""Largest request body (two numbers)."""


class PriceHolder(Protocol):
    """Whoever holds the price (the orchestrator's ``PaymentReceiver``)."""

    price: Fraction
    """Wei per pixel."""


class OrchestratorPricing(Protocol):
    """What the routes need of the orchestrator (``lpstream.orchestrator.Orchestrator``)."""

    @property
    def payments(self) -> PriceHolder | None:
        """Its payments, which hold the price; None off chain."""
        ...


def _whole(body: dict[str, Any], name: str, low: int, default: int | None) -> int:
    value = body.get(name, default)
    if value is None:
        raise ProtocolError(f"{name}: required", code=400)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= MAX_INT64:
        raise ProtocolError(f"{name}: a whole number from {low} to {MAX_INT64}", code=400)
    return value


def price_from_json(body: dict[str, Any]) -> Fraction:
    """The price (wei per pixel) a request body asks for (see the module comment).

    Raises:
        ProtocolError: 400, naming the field at fault.
    """
    unknown = sorted(set(body) - {"price_per_unit", "pixels_per_unit"})
    if unknown:
        raise ProtocolError(
            f"unknown field {unknown[0]!r}: expected price_per_unit and pixels_per_unit",
            code=400,
        )
    price_per_unit = _whole(body, "price_per_unit", 0, None)
    pixels_per_unit = _whole(body, "pixels_per_unit", 1, 1)
    return Fraction(price_per_unit, pixels_per_unit)


def _price_json(price: Fraction) -> Any:
    return status_json(PixelPrice.from_fraction(price))


def orchestrator_admin_routes(
    orchestrator: OrchestratorPricing, *, bodies: BodyReader | None = None
) -> list[BaseRoute]:
    """The orchestrator's admin routes; ``bodies`` reads request bodies (the app's one reader;
    a new one if None)."""
    reader = bodies or BodyReader()

    async def price(request: Request) -> Response:
        try:
            holder = orchestrator.payments
            if holder is None:
                raise ProtocolError(
                    "this orchestrator works off chain, for free: it has no price to set",
                    code=409,
                )
            if request.method == "GET":
                return JSONResponse({"price": _price_json(holder.price)})
            body = await reader.read(request, MAX_BODY)
            new = price_from_json(load_json_object(body.decode("utf-8", errors="replace")))
        except LpstreamError as exc:
            return json_error(exc)
        previous, holder.price = holder.price, new
        log.info(
            "price set to %s wei per pixel (was %s) by %s",
            new,
            previous,
            request_identity(request) or "an API client",
        )
        return JSONResponse({"price": _price_json(new), "previous": _price_json(previous)})

    return [Route(PRICE_PATH, price, methods=["GET", "POST"])]
