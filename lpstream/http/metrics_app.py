"""``GET /metrics`` alone, for a second, plain HTTP listener on a private address
(``--metrics-addr``): a scraper there needs no API token, and nothing else of the node is
reachable through it."""

from __future__ import annotations

import attrs
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from lpstream.http.limits import HttpLimits
from lpstream.http.server import HttpServer
from lpstream.metrics import Metrics

__all__ = [
    "METRICS_MAX_CONNECTIONS",
    "PROMETHEUS_TEXT",
    "metrics_app",
    "metrics_response",
    "metrics_server",
]

PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of the Prometheus text exposition format."""
METRICS_MAX_CONNECTIONS = 16
"""Connections the metrics listener serves at once (scrapers are few)."""


def metrics_response(metrics: Metrics) -> Response:
    """``metrics`` rendered for a Prometheus scrape."""
    return PlainTextResponse(metrics.render(), media_type=PROMETHEUS_TEXT)


def metrics_app(metrics: Metrics) -> Starlette:
    """The ASGI app of ``GET /metrics``; every other path is 404, other methods 405."""

    async def prometheus(request: Request) -> Response:
        return metrics_response(metrics)

    return Starlette(routes=[Route("/metrics", prometheus)])


def metrics_server(metrics: Metrics, limits: HttpLimits) -> HttpServer:
    """A plain HTTP server of :func:`metrics_app`, with the timeouts of ``limits`` and at
    most :data:`METRICS_MAX_CONNECTIONS` connections."""
    return HttpServer(
        metrics_app(metrics),
        limits=attrs.evolve(limits, max_connections=METRICS_MAX_CONNECTIONS),
    )
