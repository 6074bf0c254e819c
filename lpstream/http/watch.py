"""The watch page: a stream in the browser, with hls.js served from the package.

``GET /watch/{stream}`` is a small page that plays ``/hls/{stream}/index.m3u8``: with hls.js
(low-latency mode on, so LL-HLS parts are used when the playlist has them) where the browser
has Media Source Extensions, natively where it plays HLS itself (Safari).
``GET /watch/{stream}?recording={id}`` plays a recording of it instead (``/vod/…``).
``GET /watch/{stream}?whep=1`` (optionally ``&rendition=NAME``, ``&token=...``) plays the same
stream over WebRTC instead: an ``RTCPeerConnection`` that receives H.264, offered to
``/whep/{stream}`` (WHEP, see ``lpstream.http.whep``), sub-second latency, with sound (the page
starts muted, as browsers autoplay only muted video).
hls.js is installed
from npm by ``scripts/setup`` (version pinned in ``web/package-lock.json``), copied into
``lpstream/http/static/`` and served at ``/static/hls.min.js``; nothing is fetched from
elsewhere at run time.
"""

from __future__ import annotations

import html
from importlib import resources

from starlette.requests import Request
from starlette.responses import HTMLResponse, PlainTextResponse, Response
from starlette.routing import Route

from lpstream.media import check_stream_name
from lpstream.storage.recordings import check_recording_id
from lpstream.storage.store import StoreError

__all__ = ["HLS_JS", "hls_js", "publish_page", "watch_page", "watch_routes", "whep_page"]

HLS_JS = "hls.min.js"


def hls_js() -> bytes | None:
    """The packaged hls.js, or None when ``scripts/setup`` has not installed it."""
    asset = resources.files("lpstream.http").joinpath("static", HLS_JS)
    try:
        return asset.read_bytes()
    except FileNotFoundError:
        return None


def watch_page(stream: str, recording: str | None = None) -> str:
    """The HTML of the watch page for ``stream``, or for one of its recordings (a name and
    id already checked by the caller)."""
    playlist = (
        f"/hls/{stream}/index.m3u8"
        if recording is None
        else f"/vod/{stream}/{recording}/index.m3u8"
    )
    return (
        _PAGE.replace("{{playlist}}", html.escape(playlist))
        .replace("{{live}}", "true" if recording is None else "false")
        .replace(
            "{{name}}", html.escape(stream if recording is None else f"{stream} · {recording}")
        )
    )


def whep_page(stream: str, rendition: str = "source") -> str:
    """The HTML of the WebRTC (WHEP) watch page for ``stream`` (names already checked)."""
    endpoint = f"/whep/{stream}" if rendition == "source" else f"/whep/{stream}/{rendition}"
    return (
        _WHEP_PAGE.replace("{{endpoint}}", html.escape(endpoint))
        .replace("{{rendition}}", html.escape(rendition))
        .replace("{{name}}", html.escape(stream))
    )


def publish_page(stream: str) -> str:
    """The HTML of the browser publish page for ``stream`` (camera and microphone over WHIP)."""
    return _PUBLISH_PAGE.replace("{{name}}", html.escape(stream))


def watch_routes() -> list[Route]:
    """``/watch/{stream}``, ``/publish/{stream}`` and ``/static/hls.min.js``."""
    script = hls_js()

    async def watch(request: Request) -> Response:
        name = request.path_params["stream"]
        rendition = request.query_params.get("rendition", "source")
        try:
            check_stream_name(name)
            check_stream_name(rendition, what="rendition name")
        except ValueError:
            return PlainTextResponse("bad stream or rendition name\n", status_code=400)
        recording = request.query_params.get("recording")
        if recording is not None:
            try:
                check_recording_id(recording)
            except StoreError:
                return PlainTextResponse("bad recording id\n", status_code=400)
            page = watch_page(name, recording)
        elif request.query_params.get("whep", "0") not in ("", "0"):
            page = whep_page(name, rendition)
        else:
            page = watch_page(name)
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    async def publish(request: Request) -> Response:
        name = request.path_params["stream"]
        try:
            check_stream_name(name)
        except ValueError:
            return PlainTextResponse("bad stream name\n", status_code=400)
        return HTMLResponse(publish_page(name), headers={"Cache-Control": "no-cache"})

    async def static_hls_js(request: Request) -> Response:
        if script is None:
            return PlainTextResponse(
                "hls.js is not installed: run scripts/setup (it installs it from npm)\n",
                status_code=404,
            )
        return Response(
            script,
            media_type="text/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    return [
        Route("/watch/{stream}", watch),
        Route("/publish/{stream}", publish),
        Route(f"/static/{HLS_JS}", static_hls_js),
    ]


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{name}} · lpstream</title>
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:2rem}
video{width:100%;max-width:960px;background:#000;display:block}
#facts{font-family:ui-monospace,monospace;font-size:.9rem;color:#aaa;margin-top:.5rem}
a{color:#8cf}
</style></head>
<body><h1>{{name}}</h1>
<video id="video" controls autoplay muted playsinline></video>
<div id="facts">waiting for the stream…</div>
<p>HLS: <a href="{{playlist}}">{{playlist}}</a>
(also plays in ffplay, VLC or Safari) · <a href="?whep=1">watch with WebRTC (WHEP)</a></p>
<script src="/static/hls.min.js"></script>
<script>
"use strict";
const video = document.getElementById("video");
const facts = document.getElementById("facts");
const playToken = new URLSearchParams(location.search).get("token");
const source =
  "{{playlist}}" + (playToken ? "?token=" + encodeURIComponent(playToken) : "");
window.player = {engine: "none", errors: []};
function show(text) { facts.textContent = text; }
if (window.Hls && Hls.isSupported()) {
  const hls = new Hls({lowLatencyMode: true});
  window.player = {engine: "hls.js " + Hls.version, hls: hls, errors: []};
  hls.on(Hls.Events.ERROR, (event, data) => {
    window.player.errors.push(data.details);
    if (!data.fatal) return;
    show("error: " + data.details + " (retrying)");
    if (data.type === Hls.ErrorTypes.NETWORK_ERROR) setTimeout(() => hls.loadSource(source), 1000);
    else if (data.type === Hls.ErrorTypes.MEDIA_ERROR) hls.recoverMediaError();
  });
  hls.loadSource(source);
  hls.attachMedia(video);
  setInterval(() => {
    const level = hls.levels[hls.currentLevel];
    show(window.player.engine +
         (level ? " · " + level.width + "x" + level.height : "") +
         ({{live}} ? " · latency " + (hls.latency || 0).toFixed(2) + " s" +
                     (hls.lowLatencyMode ? " · low-latency mode" : "")
                   : " · " + video.currentTime.toFixed(1) + " / " +
                     (video.duration || 0).toFixed(1) + " s"));
  }, 500);
} else if (video.canPlayType("application/vnd.apple.mpegurl")) {
  window.player = {engine: "native", errors: []};
  video.src = source;
  show("native HLS");
} else {
  show("this browser cannot play HLS");
}
</script>
</body></html>
"""


_PUBLISH_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>publish {{name}} · lpstream</title>
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:2rem}
video{width:100%;max-width:640px;background:#000;display:block}
#state{font-family:ui-monospace,monospace;color:#aaa;margin:.5rem 0}
a{color:#8cf}
</style></head>
<body><h1>publish {{name}}</h1>
<video id="preview" autoplay muted playsinline></video>
<div id="state">asking for the camera…</div>
<p>Watch it at <a href="/watch/{{name}}">/watch/{{name}}</a>. A token, if the node wants one:
<code>?token=…</code> in this page's address.</p>
<script>
"use strict";
const state = document.getElementById("state");
window.publisher = {state: "starting", error: null, resource: null};
function show(text) { window.publisher.state = text; state.textContent = text; }
async function publish() {
  const media = await navigator.mediaDevices.getUserMedia(
    {video: {width: 1280, height: 720}, audio: true});
  document.getElementById("preview").srcObject = media;
  const pc = new RTCPeerConnection();
  window.publisher.pc = pc;
  for (const track of media.getTracks()) {
    const transceiver = pc.addTransceiver(track, {direction: "sendonly", streams: [media]});
    if (track.kind === "video") {
      // H.264 goes to HLS without a re-encode: offer it alone.
      const h264 = RTCRtpSender.getCapabilities("video").codecs.filter(
        c => c.mimeType === "video/H264" && /packetization-mode=1/.test(c.sdpFmtpLine || ""));
      transceiver.setCodecPreferences(h264);
    }
  }
  pc.onconnectionstatechange = () => show("connection " + pc.connectionState);
  await pc.setLocalDescription(await pc.createOffer());
  // Non-trickle WHIP: every candidate goes in the offer.
  await new Promise(resolve => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  const headers = {"Content-Type": "application/sdp"};
  const token = new URLSearchParams(location.search).get("token");
  if (token) headers["Authorization"] = "Bearer " + token;
  show("offering…");
  const reply = await fetch(
    "/whip/{{name}}", {method: "POST", headers, body: pc.localDescription.sdp});
  if (reply.status !== 201) {
    throw new Error("WHIP answered " + reply.status + ": " + await reply.text());
  }
  window.publisher.resource = reply.headers.get("Location");
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  show("answered, connecting…");
  window.addEventListener("pagehide", () => {
    const resource = window.publisher.resource;
    if (resource) fetch(resource, {method: "DELETE", headers, keepalive: true});
  });
}
publish().catch(error => { window.publisher.error = String(error); show("error: " + error); });
</script>
</body></html>
"""


_WHEP_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{{name}} · WebRTC · lpstream</title>
<style>
body{font-family:system-ui,sans-serif;background:#111;color:#eee;margin:2rem}
video{width:100%;max-width:960px;background:#000;display:block}
#facts{font-family:ui-monospace,monospace;font-size:.9rem;color:#aaa;margin-top:.5rem}
a{color:#8cf}
</style></head>
<body><h1>{{name}} <small>({{rendition}}, WebRTC)</small></h1>
<video id="video" controls autoplay muted playsinline></video>
<div id="facts">connecting…</div>
<p>WHEP: <code>POST {{endpoint}}</code> · <a href="/watch/{{name}}">watch with HLS</a></p>
<script>
"use strict";
const video = document.getElementById("video");
const facts = document.getElementById("facts");
window.player = {engine: "whep", state: "starting", error: null, frames: 0, framesDecoded: 0,
                 resource: null, pc: null, attempts: 0};
const headers = {"Content-Type": "application/sdp"};
const token = new URLSearchParams(location.search).get("token");
if (token) headers["Authorization"] = "Bearer " + token;
function show(text) { window.player.state = text; facts.textContent = text; }
function countFrames() {
  window.player.frames += 1;
  video.requestVideoFrameCallback(countFrames);
}
if ("requestVideoFrameCallback" in video) video.requestVideoFrameCallback(countFrames);
function retry(pc) {
  // The stream is not live yet, or it ended or restarted: offer again in a moment.
  if (pc.retrying) return;
  pc.retrying = true;
  pc.close();
  setTimeout(start, 2000);
}
async function play(pc) {
  // The node sends the stream's own H.264 (no re-encode) and its sound as Opus (encoded once
  // for every viewer); both tracks are in one stream, so the browser keeps them in sync.
  // The page starts muted (browsers only autoplay muted video): unmute with the controls.
  pc.addTransceiver("video", {direction: "recvonly"});
  pc.addTransceiver("audio", {direction: "recvonly"});
  pc.ontrack = event => {
    const stream = event.streams[0];
    if (stream) {
      if (video.srcObject !== stream) video.srcObject = stream;
    } else {
      if (!video.srcObject) video.srcObject = new MediaStream();
      video.srcObject.addTrack(event.track);
    }
    // The node closes DTLS when the stream ends; the connection state would only notice
    // once ICE consent fails, seconds later.
    const transport = event.receiver.transport;
    if (transport) {
      transport.onstatechange = () => transport.state === "closed" && retry(pc);
    }
  };
  pc.onconnectionstatechange = () => {
    const state = pc.connectionState;
    show("connection " + state);
    if (state === "failed" || state === "closed") retry(pc);
    if (state === "disconnected") {
      setTimeout(() => pc.connectionState === "disconnected" && retry(pc), 3000);
    }
  };
  await pc.setLocalDescription(await pc.createOffer());
  // Non-trickle: every candidate goes in the offer.
  await new Promise(resolve => {
    if (pc.iceGatheringState === "complete") return resolve();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === "complete" && resolve();
  });
  show("offering…");
  const reply = await fetch(
    "{{endpoint}}", {method: "POST", headers, body: pc.localDescription.sdp});
  if (reply.status !== 201) {
    throw new Error("WHEP answered " + reply.status + ": " + await reply.text());
  }
  window.player.resource = reply.headers.get("Location");
  window.player.error = null;
  await pc.setRemoteDescription({type: "answer", sdp: await reply.text()});
  show("answered, connecting…");
}
function start() {
  const pc = window.player.pc = new RTCPeerConnection();
  window.player.attempts += 1;
  play(pc).catch(error => {
    window.player.error = String(error);
    show("error: " + error + " (retrying)");
    retry(pc);
  });
}
window.addEventListener("pagehide", () => {
  const resource = window.player.resource;
  if (resource) fetch(resource, {method: "DELETE", headers, keepalive: true});
});
setInterval(async () => {
  const pc = window.player.pc;
  if (!pc || pc.connectionState !== "connected") return;
  (await pc.getStats()).forEach(s => {
    if (s.type === "inbound-rtp" && s.kind === "video") {
      window.player.framesDecoded = s.framesDecoded || 0;
    }
  });
  facts.textContent = window.player.state + " · " + video.videoWidth + "x" +
    video.videoHeight + " · " + window.player.framesDecoded + " frames decoded";
}, 500);
start();
</script>
</body></html>
"""
