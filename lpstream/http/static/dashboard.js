// The lpstream dashboard: reads /api/status/events (server-sent events, read with fetch() so
// that the token travels in the Authorization header) and each live stream's thumbnail, and
// draws streams, orchestrators, payments and workers. Charts are small SVGs drawn here.
// Without a token that the node accepts, the board stays empty and the page asks for one.
"use strict";
(() => {
  const KEY = "lpstream.dashboard.token";
  const RETRY_MS = 2000;
  const THUMBNAIL_EVERY_MS = 3000;
  const HISTORY = 300; // chart points kept (5 minutes at one event a second)
  const $ = (id) => document.getElementById(id);
  const board = $("board");
  const login = $("login");

  const state = {
    token: sessionStorage.getItem(KEY),
    abort: null,
    history: [],
    cards: new Map(), // stream name -> {card, figures, img, segment, url, busy}
    sections: null,
    timer: null,
  };
  // What the page shows, for people scripting it (and the browser test).
  window.dashboard = {state: "starting", events: 0, status: null, thumbnails: 0};

  function say(text) {
    window.dashboard.state = text;
    $("state").textContent = text;
  }

  function authHeaders() {
    return state.token ? {Authorization: "Bearer " + state.token} : {};
  }

  // -- formatting ----------------------------------------------------------------------------

  const eth = (m) => (m && typeof m.eth === "number" ? m.eth.toFixed(6) + " ETH" : "-");
  const ms = (v) => (v === null || v === undefined ? "-" : Math.round(v) + " ms");
  const latency = (l) => (l && l.median !== null ? ms(l.median) + " / " + ms(l.p95) : "-");
  const count = (n) => (typeof n === "number" ? n.toLocaleString("en") : "-");
  const pixels = (n) => (typeof n === "number" ? (n / 1e6).toFixed(1) + " Mpx/s" : "-");
  const yes = (b) => (b ? "yes" : "no");

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    for (const child of children) node.append(child);
    return node;
  }

  function figures(dl, rows) {
    // rows: [key, label, value]; dd elements are kept so the page does not flicker.
    const seen = new Set();
    for (const [key, label, value] of rows) {
      seen.add(key);
      let dd = dl.querySelector(`dd[data-figure="${key}"]`);
      if (!dd) {
        dl.append(el("dt", {text: label, "data-label": key}), (dd = el("dd", {"data-figure": key})));
      }
      if (dd.textContent !== String(value)) dd.textContent = String(value);
    }
    for (const dd of [...dl.querySelectorAll("dd[data-figure]")]) {
      if (!seen.has(dd.dataset.figure)) {
        dl.querySelector(`dt[data-label="${dd.dataset.figure}"]`)?.remove();
        dd.remove();
      }
    }
  }

  function table(container, head, rows) {
    // The last column (lists, reasons) wraps; the others keep to one line.
    const body = rows.map((r) => el("tr", {}, ...r.map((c, i) =>
      el("td", i === r.length - 1 ? {text: String(c), class: "wrap"} : {text: String(c)}))));
    const t = el("table", {}, el("thead", {}, el("tr", {}, ...head.map((h) => el("th", {text: h})))),
      el("tbody", {}, ...body));
    container.replaceChildren(rows.length ? t : el("p", {text: "none", class: "dim"}));
  }

  // -- the board -----------------------------------------------------------------------------

  function sections() {
    if (state.sections) return state.sections;
    const make = (id, title) => {
      const body = el("div", {id: id + "-body"});
      board.append(el("section", {id}, el("h2", {text: title}), body));
      return body;
    };
    state.sections = {
      streams: make("streams", "Live streams"),
      orchestrators: make("orchestrators", "Orchestrators"),
      payments: make("payments", "Payments"),
      workers: make("workers", "Workers"),
      node: make("node-facts", "Node"),
    };
    state.sections.streams.className = "grid";
    state.sections.orchestrators.className = "scroll"; // a wide table scrolls on a phone
    return state.sections;
  }

  function clearBoard() {
    for (const c of state.cards.values()) if (c.url) URL.revokeObjectURL(c.url);
    state.cards.clear();
    state.sections = null;
    state.history = [];
    board.replaceChildren();
    board.hidden = true;
    $("node").textContent = "";
    window.dashboard.status = null;
  }

  function streamCard(name) {
    let c = state.cards.get(name);
    if (c) return c;
    const img = el("img", {class: "thumb", alt: "latest keyframe of " + name});
    const dl = el("dl");
    const watch = el("a", {href: "/watch/" + encodeURIComponent(name), text: "watch"});
    const card = el("article", {class: "card", "data-stream": name},
      el("h3", {text: name + " "}, watch), img, dl);
    c = {card, img, dl, segment: null, url: null, busy: false};
    state.cards.set(name, c);
    sections().streams.append(card);
    return c;
  }

  function renderStreams(streams) {
    const live = Object.entries(streams || {}).filter(([, s]) => s.live);
    for (const [name, c] of state.cards) {
      if (!live.some(([n]) => n === name)) {
        if (c.url) URL.revokeObjectURL(c.url);
        c.card.remove();
        state.cards.delete(name);
      }
    }
    for (const [name, s] of live) {
      const c = streamCard(name);
      const webrtc = Object.values((s.webrtc || {}).renditions || {});
      const rows = [
        ["source", "source", s.source || "-"],
        ["renditions", "renditions", (s.renditions || []).join(", ") || "-"],
        ["publish_latency", "publish p50/p95", latency(s.publish_latency_ms)],
        ["part_latency", "part p50/p95", latency(s.part_latency_ms)],
        ["segments_in", "segments in", count(s.segments_in)],
        ["in_flight", "in flight", count(s.segments_in_flight)],
        ["whep_viewers", "WHEP viewers", count(webrtc.reduce((n, r) => n + (r.subscribers || 0), 0))],
      ];
      if (s.publisher) rows.push(["publisher", "publisher", s.publisher]);
      const ai = s.ai;
      if (ai) {
        const stats = ai.stats || {};
        rows.push(
          ["ai", "AI pipeline", ai.pipeline + (ai.running ? " (running)" : " (" + ai.stopped + ")")],
          ["ai_fps", "AI fps in/out", (stats.fps_in ?? "-") + " / " + (stats.fps_out ?? "-")],
          ["ai_frame_latency", "AI frame p50/p95", latency(ai.frame_latency_ms)],
          ["ai_frames", "AI frames out", count(ai.frames_out) + " (dropped " + count(ai.dropped) + ")"],
        );
        if (ai.orchestrator) rows.push(["ai_billed", "AI billed", eth(ai.billed)]);
      }
      const out = s.outputs;
      if (out && out.recording) {
        rows.push(["recording", "recording", out.recording.id + " · " + out.recording.sink.state +
          " · " + count(out.recording.sink.stored) + " stored"]);
      }
      if (out && out.origin) rows.push(["origin", "origin", out.origin.state]);
      for (const f of (out && out.forwards) || []) {
        rows.push(["forward_" + f.id, "forward", f.url + " · " + f.state]);
      }
      figures(c.dl, rows);
    }
    if (!live.length && !sections().streams.querySelector(".card")) {
      sections().streams.replaceChildren(el("p", {text: "no live stream"}));
    } else {
      sections().streams.querySelector(":scope > p")?.remove();
    }
  }

  function renderOrchestrators(status) {
    const pool = status.orchestrators || [];
    table(sections().orchestrators,
      ["address", "connected", "price (wei/px)", "latency score", "failures", "suspended",
       "jobs", "refused", "AI pipelines (price)"],
      pool.map((o) => [o.address, yes(o.connected),
        o.price_per_pixel ? o.price_per_pixel.wei_per_pixel : "-",
        o.latency_score === null || o.latency_score === undefined ? "-" : o.latency_score.toFixed(2),
        o.failures, yes(o.suspended), o.jobs, o.refused || "-",
        o.pipelines ? Object.entries(o.pipelines).map(([p, m]) => p + " " + eth(m) + "/s").join(", ") || "-" : "-"]));
  }

  function money(m) {
    return m && m.eth !== undefined ? m.eth : 0;
  }

  function renderPayments(status) {
    const p = status.payments;
    const box = sections().payments;
    if (!p) {
      box.replaceChildren(el("p", {text: "off chain: no payments"}));
      return;
    }
    const sender = p.gateway || null;
    const receiver = status.role === "orchestrator" ? p : p.orchestrator || null;
    const chain = p.chain || null;
    const rows = [];
    if (chain) {
      rows.push(["deposit", "deposit", eth(chain.gateway_deposit)],
        ["reserve", "reserve", eth(chain.gateway_reserve)],
        ["earned", "earned (fees)", eth(chain.orchestrator_fees)],
        ["round", "round / block", (chain.round ?? "-") + " / " + (chain.block ?? "-")]);
    }
    if (sender) {
      rows.push(["tickets_sent", "tickets sent", count(sender.tickets_sent)],
        ["ev_sent", "EV sent", eth(sender.ev_sent)]);
    }
    if (receiver) {
      rows.push(["tickets_received", "tickets received", count(receiver.tickets_received)],
        ["tickets_won", "tickets won", count(receiver.tickets_won)],
        ["tickets_redeemed", "tickets redeemed", count(receiver.tickets_redeemed) +
          " (pending " + count(receiver.tickets_pending) + ")"],
        ["ev_received", "EV received", eth(receiver.ev_received)],
        ["price", "price (wei/px)", receiver.price_per_pixel.wei_per_pixel],
        ["face_value_redeemed", "redeemed", eth(receiver.face_value_redeemed)]);
    }
    let dl = box.querySelector("dl");
    let charts = box.querySelector(".grid");
    if (!dl) {
      box.replaceChildren((dl = el("dl")), (charts = el("div", {class: "grid"})));
      charts.style.marginTop = ".8rem";
    }
    figures(dl, rows);
    state.history.push({
      t: Date.now(),
      evSent: sender ? money(sender.ev_sent) : null,
      evReceived: receiver ? money(receiver.ev_received) : null,
      earned: chain ? money(chain.orchestrator_fees) : receiver ? money(receiver.face_value_redeemed) : null,
      sent: sender ? sender.tickets_sent : null,
      won: receiver ? receiver.tickets_won : null,
    });
    if (state.history.length > HISTORY) state.history.shift();
    const series = [
      ["evSent", "EV sent (ETH)"], ["evReceived", "EV received (ETH)"],
      ["earned", "earnings (ETH)"], ["sent", "tickets sent"], ["won", "tickets won"],
    ].filter(([k]) => state.history.some((h) => h[k] !== null));
    for (const [key, label] of series) chart(charts, key, label);
  }

  function chart(container, key, label) {
    let box = container.querySelector(`[data-chart="${key}"]`);
    const ns = "http://www.w3.org/2000/svg";
    if (!box) {
      const svg = document.createElementNS(ns, "svg");
      svg.setAttribute("viewBox", "0 0 300 70");
      svg.setAttribute("preserveAspectRatio", "none");
      const line = document.createElementNS(ns, "polyline");
      line.setAttribute("fill", "none");
      line.setAttribute("stroke", "#8cf");
      line.setAttribute("stroke-width", "2");
      line.setAttribute("vector-effect", "non-scaling-stroke");
      svg.append(line);
      box = el("div", {class: "chart", "data-chart": key},
        el("span", {class: "label", text: label + " "}), el("span", {class: "value"}), svg);
      container.append(box);
    }
    const points = state.history.filter((h) => h[key] !== null);
    const values = points.map((h) => h[key]);
    const last = values[values.length - 1];
    box.querySelector(".value").textContent =
      typeof last === "number" ? (Number.isInteger(last) ? count(last) : last.toFixed(6)) : "-";
    const t0 = points.length ? points[0].t : 0;
    const span = Math.max(1, (points.length ? points[points.length - 1].t : 0) - t0);
    const lo = Math.min(...values), hi = Math.max(...values);
    const range = hi - lo || 1;
    box.querySelector("polyline").setAttribute("points", points.map((h) =>
      ((h.t - t0) / span * 300).toFixed(1) + "," + (66 - (h[key] - lo) / range * 62).toFixed(1)).join(" "));
  }

  function renderWorkers(status) {
    const o = status.role === "orchestrator" ? status : status.orchestrator;
    const box = sections().workers;
    if (!o) {
      box.replaceChildren(el("p", {text: "no orchestrator in this node"}));
      return;
    }
    const rows = Object.entries(o.workers || {}).map(([id, w]) => [id, w.sessions + " / " + w.capacity,
      Math.round(100 * w.sessions / Math.max(1, w.capacity)) + "%"]);
    const load = o.work_pixels_per_second / Math.max(1, o.capacity_pixels_per_second);
    const summary = el("dl");
    figures(summary, [
      ["sessions", "sessions", o.sessions + " / " + o.capacity],
      ["work", "work", pixels(o.work_pixels_per_second) + " of " + pixels(o.capacity_pixels_per_second)],
      ["jobs", "jobs in flight", count(o.jobs_in_flight)],
      ["pipelines", "AI pipelines offered", (o.pipelines || []).join(", ") || "-"],
      ["live", "live AI sessions", count(Object.keys((o.live && o.live.sessions) || {}).length)],
    ]);
    const bar = el("div", {class: "bar", title: "load"}, el("span"));
    bar.firstChild.style.width = Math.min(100, Math.round(100 * load)) + "%";
    const list = el("div", {class: "scroll"});
    table(list, ["worker", "sessions", "load"], rows);
    box.replaceChildren(bar, summary, list);
  }

  function renderNode(status) {
    const m = status.memory;
    const rows = [["role", "role", status.role], ["version", "version", status.version]];
    if (m) {
      rows.push(["memory", "memory", (m.rss / 2 ** 20).toFixed(0) + " MiB" +
        (m.budget ? " of " + (m.budget / 2 ** 20).toFixed(0) + " MiB" : "")]);
    }
    if (status.whep) rows.push(["whep", "WHEP viewers", count(status.whep.active_sessions)]);
    if (status.rtmp) rows.push(["rtmp", "RTMP publishers", count(status.rtmp.active_publishers)]);
    let dl = sections().node.querySelector("dl");
    if (!dl) sections().node.append((dl = el("dl")));
    figures(dl, rows);
  }

  function render(status) {
    window.dashboard.status = status;
    window.dashboard.events += 1;
    board.hidden = false;
    login.hidden = true;
    const streams = Object.values(status.streams || {}).filter((s) => s.live).length;
    $("node").textContent = status.role + " " + status.version + " · " + streams + " live";
    renderStreams(status.streams);
    for (const part of [renderOrchestrators, renderPayments, renderWorkers, renderNode]) {
      try {
        part(status);
      } catch (error) {
        // A figure this page does not know yet must not stop the rest.
        console.warn("dashboard:", error);
      }
    }
  }

  // -- thumbnails ----------------------------------------------------------------------------

  async function refreshThumbnail(name, c) {
    if (c.busy) return;
    c.busy = true;
    try {
      const reply = await fetch("/api/streams/" + encodeURIComponent(name) + "/thumbnail.jpg",
        {headers: authHeaders(), cache: "no-store"});
      if (reply.status === 401) return askForToken("That token is no longer accepted.");
      if (!reply.ok) return;
      const segment = reply.headers.get("X-Thumbnail-Segment");
      if (segment === c.segment) return;
      const url = URL.createObjectURL(await reply.blob());
      if (c.url) URL.revokeObjectURL(c.url);
      c.url = url;
      c.segment = segment;
      c.img.src = url;
      c.img.dataset.segment = segment;
      window.dashboard.thumbnails += 1;
    } catch (error) {
      console.warn("thumbnail of", name, error);
    } finally {
      c.busy = false;
    }
  }

  function refreshThumbnails() {
    for (const [name, c] of state.cards) refreshThumbnail(name, c);
  }

  // -- the event stream ----------------------------------------------------------------------

  function stop() {
    if (state.abort) state.abort.abort();
    state.abort = null;
    clearInterval(state.timer);
    state.timer = null;
  }

  function askForToken(message) {
    stop();
    clearBoard();
    sessionStorage.removeItem(KEY);
    state.token = null;
    $("login-message").textContent = message;
    login.hidden = false;
    $("token").focus();
    say("waiting for the token");
  }

  function handle(block) {
    const data = block.split("\n").filter((l) => l.startsWith("data:"))
      .map((l) => l.slice(5).replace(/^ /, "")).join("\n");
    if (data) render(JSON.parse(data));
  }

  async function connect() {
    stop();
    const abort = (state.abort = new AbortController());
    let reply;
    try {
      say("connecting");
      reply = await fetch("/api/status/events", {
        headers: {...authHeaders(), Accept: "text/event-stream"}, signal: abort.signal,
        cache: "no-store",
      });
    } catch (error) {
      if (abort.signal.aborted) return;
      say("node unreachable, retrying");
      setTimeout(connect, RETRY_MS);
      return;
    }
    if (reply.status === 401) {
      return askForToken(state.token ? "That token was not accepted." : "This node asks for its token.");
    }
    if (reply.status === 403) {
      return askForToken("This node answers loopback clients only: start it with --api-token " +
        "to open the dashboard from elsewhere.");
    }
    if (!reply.ok) {
      say("status events: " + reply.status + ", retrying");
      setTimeout(connect, RETRY_MS);
      return;
    }
    say("live");
    state.timer = setInterval(refreshThumbnails, THUMBNAIL_EVERY_MS);
    setTimeout(refreshThumbnails, 300);
    const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          handle(buffer.slice(0, end));
          buffer = buffer.slice(end + 2);
        }
      }
    } catch (error) {
      if (abort.signal.aborted) return;
    }
    if (state.abort !== abort) return;
    say("reconnecting");
    clearInterval(state.timer);
    setTimeout(connect, RETRY_MS);
  }

  login.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = $("token").value.trim();
    if (!token) return;
    state.token = token;
    sessionStorage.setItem(KEY, token);
    $("token").value = "";
    login.hidden = true;
    connect();
  });

  connect();
})();
