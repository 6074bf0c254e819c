"""The operator's dashboard: ``GET /dashboard``, its script, and the two data routes it reads.

How this works:

* ``/dashboard`` is a page shell that anyone may load and that holds no data: no stream name,
  no figure. Its script (``/static/dashboard.js``, shipped in the package like hls.js) asks
  for the node's token (``--api-token``), keeps it in ``sessionStorage`` and sends it as
  ``Authorization: Bearer`` on every data request; a node without tokens serves its loopback
  clients without one, as the API does. The data comes from two routes under ``/api/``,
  so the API guard holds them to the token like the rest of the API:

  - ``GET /api/status/events``: the typed status as server-sent events, read with
    ``fetch()`` (``EventSource`` cannot send the header): :mod:`~lpstream.http.status_events`;
  - ``GET /api/streams/{stream}/thumbnail.jpg``: a JPEG of the stream's latest source
    keyframe, 404 for a stream not live: :mod:`~lpstream.http.thumbnails`. The segment it
    shows is in the ``X-Thumbnail-Segment`` header.

* Without JavaScript the page degrades to text: its ``<noscript>`` part holds a form that
  posts the token to ``/dashboard`` (in the body, never the URL), answered with a text
  summary of the status. A loopback client of a node without tokens gets that summary in the
  page at once. A refused token is answered 403 with the form again.
* The script draws the charts (EV, earnings, tickets over the time the page is open) itself,
  as small SVGs: no chart library, nothing fetched from elsewhere.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Callable, Mapping
from importlib import resources
from typing import Any, Protocol

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from lpstream.access import SecretSet
from lpstream.errors import BusyError, MediaError, RemoteProtocolError
from lpstream.http.api_guard import authorize
from lpstream.http.limits import BodyReader
from lpstream.http.status import status_json
from lpstream.http.status_events import StatusEvents
from lpstream.http.thumbnails import ThumbnailCache
from lpstream.media import check_stream_name
from lpstream.playback.live import LivePlayback

__all__ = [
    "DASHBOARD_JS",
    "LiveStreams",
    "dashboard_js",
    "dashboard_page",
    "dashboard_routes",
    "status_summary",
]

DASHBOARD_JS = "dashboard.js"
MAX_FORM = 4096
"""Largest token form body, bytes."""


class LiveStreams(Protocol):
    """Where the thumbnails find live streams (the gateway; ``PlaybackDirectory``)."""

    def playback(self, name: str) -> LivePlayback | None: ...


def dashboard_js() -> bytes | None:
    """The packaged dashboard script, or None when the package lacks it."""
    try:
        return resources.files("lpstream.http").joinpath("static", DASHBOARD_JS).read_bytes()
    except FileNotFoundError:
        return None


def _money(value: Any) -> str:
    return f"{value['eth']:.6f} ETH" if isinstance(value, Mapping) and "eth" in value else "-"


def _latency(value: Any) -> str:
    if not isinstance(value, Mapping) or value.get("median") is None:
        return "-"
    return f"{value['median']:.0f}/{value['p95']:.0f} ms"


def _stream_lines(name: str, s: Mapping[str, Any]) -> list[str]:
    renditions = (s.get("webrtc") or {}).get("renditions") or {}
    viewers = sum(r.get("subscribers", 0) for r in renditions.values() if isinstance(r, Mapping))
    lines = [
        f"  {name}: {'live' if s.get('live') else 'ended'} {s.get('source') or ''}"
        f" renditions {','.join(s.get('renditions', ())) or '-'}",
        f"    publish p50/p95 {_latency(s.get('publish_latency_ms'))}"
        f" · part {_latency(s.get('part_latency_ms'))}"
        f" · segments {s.get('segments_in', 0)} · WHEP viewers {viewers}",
    ]
    ai = s.get("ai")
    if isinstance(ai, Mapping):
        stats = ai.get("stats") or {}
        lines.append(
            f"    AI {ai.get('pipeline')} {'running' if ai.get('running') else 'stopped'}"
            f" · fps {stats.get('fps_out', '-')} · frame latency"
            f" {_latency(ai.get('frame_latency_ms'))} · frames {ai.get('frames_out', 0)}"
        )
    outputs = s.get("outputs")
    if isinstance(outputs, Mapping):
        recording = outputs.get("recording")
        if isinstance(recording, Mapping):
            lines.append(f"    recording {recording['id']} {recording['sink']['state']}")
        for forward in outputs.get("forwards", ()):
            lines.append(f"    forward {forward['url']} {forward['state']}")
    return lines


def status_summary(data: Mapping[str, Any]) -> str:
    """A text summary of ``/api/status`` (as :func:`status_json` renders it)."""
    streams: Mapping[str, Any] = data.get("streams") or {}
    lines = [f"lpstream {data.get('role')} {data.get('version')}", f"streams ({len(streams)})"]
    for name, stream in streams.items():
        lines += _stream_lines(name, stream)
    lines.append("orchestrators")
    for o in data.get("orchestrators", ()):
        price = o.get("price_per_pixel")
        score = o.get("latency_score")
        lines.append(
            f"  {o['address']}: {'connected' if o['connected'] else 'not connected'}"
            f"{' suspended' if o['suspended'] else ''}"
            f" · price {price['wei_per_pixel'] if price else '-'} wei/pixel"
            f" · latency score {'-' if score is None else f'{score:.2f}'}"
            f" · failures {o['failures']} · jobs {o['jobs']}"
        )
    orch = data if data.get("role") == "orchestrator" else data.get("orchestrator")
    if isinstance(orch, Mapping):
        lines.append(
            f"workers ({orch.get('sessions', 0)}/{orch.get('capacity', 0)} sessions,"
            f" pipelines {','.join(orch.get('pipelines', ())) or '-'})"
        )
        for worker, w in (orch.get("workers") or {}).items():
            lines.append(f"  {worker}: {w['sessions']}/{w['capacity']} sessions")
    payments = data.get("payments")
    if isinstance(payments, Mapping):
        sender = payments.get("gateway") or {}
        receiver = payments if data.get("role") == "orchestrator" else payments.get("orchestrator")
        chain = payments.get("chain") or {}
        lines.append("payments")
        if chain:
            lines.append(
                f"  deposit {_money(chain.get('gateway_deposit'))}"
                f" · reserve {_money(chain.get('gateway_reserve'))}"
                f" · earned {_money(chain.get('orchestrator_fees'))}"
            )
        if sender:
            lines.append(
                f"  sent {sender.get('tickets_sent', 0)} tickets"
                f" · EV {_money(sender.get('ev_sent'))}"
            )
        if isinstance(receiver, Mapping):
            lines.append(
                f"  received {receiver.get('tickets_received', 0)}"
                f" · won {receiver.get('tickets_won', 0)}"
                f" · redeemed {receiver.get('tickets_redeemed', 0)}"
                f" · EV {_money(receiver.get('ev_received'))}"
            )
    return "\n".join(lines)


def dashboard_page(*, summary: str | None = None, message: str = "") -> str:
    """The page: the shell the script fills, and for readers without JavaScript either the
    ``summary`` (an authorized request) or the token form."""
    if summary is not None:
        fallback = f'<pre id="summary">{html.escape(summary)}</pre>' + _FORM
    else:
        fallback = _FORM
    note = f'<p class="note">{html.escape(message)}</p>' if message else ""
    return _PAGE.replace("{{noscript}}", note + fallback)


def dashboard_routes(
    *,
    status: Callable[[], object],
    playback: LiveStreams | None,
    api_tokens: SecretSet | None,
    bodies: BodyReader,
    thumbnails: ThumbnailCache | None = None,
    events: StatusEvents | None = None,
) -> list[BaseRoute]:
    """``/dashboard`` (GET, and POST for the form), ``/static/dashboard.js``,
    ``/api/status/events`` and ``/api/streams/{stream}/thumbnail.jpg``."""
    script = dashboard_js()
    cache = thumbnails or ThumbnailCache()
    stream_events = events or StatusEvents(status)

    def summary() -> str:
        return status_summary(status_json(status()))

    async def page(request: Request) -> Response:
        client = request.client.host if request.client else None
        if request.method == "GET":
            # A loopback client of a node without tokens may read the API as it is.
            open_to_it = authorize(api_tokens, client, None)[0] is not None
            text = dashboard_page(summary=summary() if open_to_it else None)
            return HTMLResponse(text, headers={"Cache-Control": "no-store"})
        try:
            body = await bodies.read(request, MAX_FORM, what="token form")
        except RemoteProtocolError as exc:
            return PlainTextResponse(f"{exc.reason}\n", status_code=exc.code)
        form = urllib.parse.parse_qs(body.decode("utf-8", errors="replace"))
        presented = (form.get("token") or [""])[0].strip() or None
        identity, code, _ = authorize(api_tokens, client, presented)
        if identity is None:
            message = (
                "This node answers loopback clients only; start it with --api-token."
                if code == 403
                else "That token was not accepted."
            )
            return HTMLResponse(dashboard_page(message=message), status_code=403, headers=_PRIVATE)
        return HTMLResponse(dashboard_page(summary=summary()), headers=_PRIVATE)

    async def static_script(request: Request) -> Response:
        if script is None:
            return PlainTextResponse("the dashboard script is not installed\n", status_code=404)
        return Response(script, media_type="text/javascript", headers={"Cache-Control": "no-cache"})

    async def thumbnail(request: Request) -> Response:
        try:
            name = check_stream_name(request.path_params["stream"])
        except ValueError:
            return PlainTextResponse("bad stream name\n", status_code=400)
        live = None if playback is None else playback.playback(name)
        if live is None or live.stream.ended:
            cache.forget(name)
            return PlainTextResponse("no such live stream\n", status_code=404)
        try:
            made = await cache.thumbnail(name, live.stream)
        except MediaError:
            made = None
        except BusyError as exc:
            return PlainTextResponse(f"{exc}\n", status_code=503, headers={"Retry-After": "1"})
        if made is None:
            return PlainTextResponse("no picture of the stream yet\n", status_code=404)
        return Response(
            made.jpeg,
            media_type="image/jpeg",
            headers={"Cache-Control": "no-store", "X-Thumbnail-Segment": str(made.seq)},
        )

    return [
        Route("/dashboard", page, methods=["GET", "POST"]),
        Route(f"/static/{DASHBOARD_JS}", static_script),
        Route("/api/status/events", stream_events, methods=["GET"]),
        Route("/api/streams/{stream}/thumbnail.jpg", thumbnail),
    ]


_PRIVATE = {"Cache-Control": "no-store"}

_FORM = """<form method="post" action="/dashboard" class="login">
<label>Token of this node (<code>--api-token</code>)
<input type="password" name="token" autocomplete="current-password"></label>
<button type="submit">Show the status as text</button></form>"""

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>lpstream dashboard</title>
<style>
:root{color-scheme:dark;--bg:#111;--card:#1b1d22;--line:#2c2f36;--dim:#9aa;--hi:#8cf}
*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;background:var(--bg);color:#eee;margin:0;padding:1rem}
header{display:flex;flex-wrap:wrap;gap:.4rem 1rem;align-items:baseline;margin-bottom:1rem}
h1{font-size:1.3rem;margin:0}h2{font-size:1.05rem;margin:1.2rem 0 .5rem}
#state,#node{color:var(--dim);font-size:.9rem}
.grid{display:grid;gap:.8rem;grid-template-columns:repeat(auto-fill,minmax(290px,1fr))}
.card{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.7rem}
.card h3{margin:0 0 .4rem;font-size:1rem;overflow-wrap:anywhere}
.thumb{width:100%;aspect-ratio:16/9;object-fit:contain;background:#000;border-radius:4px;
display:block}
dl{display:grid;grid-template-columns:auto 1fr;gap:.15rem .6rem;margin:.5rem 0 0;
font-size:.85rem}
dt{color:var(--dim)}dd{margin:0;font-family:ui-monospace,monospace;overflow-wrap:anywhere}
.scroll{overflow-x:auto}
table{border-collapse:collapse;font-size:.85rem;width:100%}
th,td{text-align:left;padding:.3rem .5rem;border-bottom:1px solid var(--line);
white-space:nowrap;vertical-align:top}
td.wrap{white-space:normal;min-width:14rem}th{color:var(--dim);font-weight:normal}
.chart{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:.5rem}
.chart svg{width:100%;height:70px;display:block}
.chart .label{font-size:.8rem;color:var(--dim)}.chart .value{font-family:ui-monospace,monospace}
.bar{height:.5rem;background:var(--line);border-radius:3px;overflow:hidden}
.bar>span{display:block;height:100%;background:var(--hi)}
.login{background:var(--card);border:1px solid var(--line);border-radius:8px;padding:1rem;
max-width:28rem;display:flex;flex-direction:column;gap:.6rem}
.login input{width:100%;padding:.4rem;font-size:1rem}
.note{color:#fc8}pre{white-space:pre-wrap;font-size:.85rem}a{color:var(--hi)}
[hidden]{display:none!important}
</style></head>
<body>
<header><h1>lpstream dashboard</h1><span id="node"></span><span id="state"></span></header>
<form id="login" class="login" hidden>
<label for="token">Token of this node (<code>--api-token</code>)</label>
<input id="token" type="password" autocomplete="current-password">
<button type="submit">Open the dashboard</button><p id="login-message" class="note"></p>
</form>
<main id="board" hidden></main>
<noscript>{{noscript}}</noscript>
<script src="/static/dashboard.js"></script>
</body></html>
"""
