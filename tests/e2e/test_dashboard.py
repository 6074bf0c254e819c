"""The dashboard in a browser: headless Chromium opens ``/dashboard`` on a paid ``lpstream dev``
with ``--api-token``, two streams pushed by ffmpeg and a live AI session. Without the token
the page asks for it and shows nothing; with it, each stream's thumbnail (its pixels, read
back through a canvas) and figures change over ten seconds, as do the payments. Screenshots
at desktop (1280x800) and phone (390x844) widths go to the test artefacts
(``$LPSTREAM_ARTIFACTS``, default ``artifacts/`` in the checkout)."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from benchmarks.harness.browser import Page, chromium_path, open_browser
from tests.e2e.nodes import NodeProcess, push_command, running_dev, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.solo]

ARTIFACTS = Path(os.environ.get("LPSTREAM_ARTIFACTS", Path(__file__).parents[2] / "artifacts"))
TOKEN = "dashboard-e2e-token"
STREAMS = ("deskcam", "phonecam")
"""Two streams; the first one gets a live AI session."""
EV = 10**12

CARDS = """(() => {
  const out = {};
  for (const card of document.querySelectorAll("[data-stream]")) {
    const img = card.querySelector("img");
    let hash = null;
    if (img.complete && img.naturalWidth) {
      const canvas = document.createElement("canvas");
      canvas.width = img.naturalWidth;
      canvas.height = img.naturalHeight;
      const context = canvas.getContext("2d");
      context.drawImage(img, 0, 0);
      const data = context.getImageData(0, 0, canvas.width, canvas.height).data;
      hash = 0;
      for (let i = 0; i < data.length; i += 4) {
        hash = (Math.imul(hash, 31) + data[i] + 3 * data[i + 1] + 7 * data[i + 2]) >>> 0;
      }
    }
    const figures = {};
    for (const dd of card.querySelectorAll("dd[data-figure]")) {
      figures[dd.dataset.figure] = dd.textContent;
    }
    out[card.dataset.stream] = {segment: img.dataset.segment || null, width: img.naturalWidth,
                                hash, figures};
  }
  return out;
})()"""
"""Per stream card: the thumbnail's segment, a hash of its pixels (drawn into a canvas), and
every figure the card shows."""

PAYMENTS = """Object.fromEntries([...document.querySelectorAll("#payments dd[data-figure]")]
  .map(dd => [dd.dataset.figure, dd.textContent]))"""
"""The payment figures the page shows."""


def api(base: str, path: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    """``GET`` (or ``POST`` of ``body``) to the node's API with the token."""
    request = urllib.request.Request(
        f"{base}{path}",
        data=None if body is None else json.dumps(body).encode(),
        method="GET" if body is None else "POST",
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return int(response.status), json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def count(text: str) -> int:
    return int(text.replace(",", ""))


async def screenshot(page: Page, name: str, width: int, height: int, *, mobile: bool) -> None:
    await page.command(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile},
    )
    await trio.sleep(0.5)  # a layout and a paint at the new size
    path = ARTIFACTS / name
    await page.screenshot(path)
    assert (await trio.Path(path).stat()).st_size > 10_000


@pytest.fixture(scope="module")
def paid_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NodeProcess]:
    folder = tmp_path_factory.mktemp("dashboard")
    profiles = folder / "profiles.json"
    profiles.write_text(
        json.dumps([{"name": "144p", "width": 256, "height": 144, "bitrate": 200_000}])
    )
    flags = (
        f"--api-token={TOKEN}",
        f"--profiles={profiles}",
        "--block-time=0.2",
        f"--ticket-ev={EV}",
        f"--max-face-value={2 * EV}",  # win probability 1/2: tickets win while we watch
        f"--data-dir={folder / 'data'}",
    )
    with running_dev(
        folder, *flags, name="dev-dashboard", offchain=False, ready_timeout=90
    ) as node:
        yield node


async def test_the_dashboard_shows_streams_ai_and_payments_live(
    paid_node: NodeProcess, tmp_path: Path
) -> None:
    if chromium_path() is None:
        pytest.fail("chromium is not installed: run scripts/setup")
    base = paid_node.url("http")
    publishers = []
    for name in STREAMS:
        command = push_command(
            f"{paid_node.url('rtmp')}/live/{name}", seconds=60, gop=30, size="320x180"
        )
        publishers.append(
            await trio.lowlevel.open_process(
                command, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
        )
    try:

        def listed() -> bool:
            status, body = api(base, "/api/status")
            streams = body.get("streams", {}) if status == 200 else {}
            return all(streams.get(n, {}).get("renditions") for n in STREAMS)

        await trio.to_thread.run_sync(lambda: wait_for(listed, 30, "both streams listed"))
        code, session = api(base, f"/api/ai/{STREAMS[0]}", {"pipeline": "noop"})
        assert code == 201, session

        await trio.Path(ARTIFACTS).mkdir(parents=True, exist_ok=True)
        async with open_browser(tmp_path / "chromium.log") as browser:
            page = await browser.new_page(f"{base}/dashboard")
            # Without the token: the page asks for it and shows no stream and no figure.
            await page.wait_for(
                "window.dashboard && window.dashboard.state",
                15,
                lambda s: s == "waiting for the token",
            )
            assert await page.evaluate("!document.getElementById('login').hidden")
            text = await page.evaluate("document.body.innerText")
            assert not any(name in text for name in STREAMS), text
            assert await page.evaluate("document.querySelectorAll('dd, [data-stream]').length") == 0
            assert await page.evaluate("window.dashboard.events") == 0
            await screenshot(page, "dashboard-token.png", 390, 844, mobile=True)

            await page.evaluate(
                f"document.getElementById('token').value = {json.dumps(TOKEN)};"
                "document.getElementById('login').requestSubmit()"
            )
            await page.wait_for(
                CARDS,
                20,
                lambda c: (
                    all(c.get(n, {}).get("hash") is not None for n in STREAMS)
                    and "ai_frames" in c[STREAMS[0]]["figures"]
                ),
            )
            # The session's first frames wait for it to be paid and its pipeline loaded.
            await page.wait_for(
                CARDS, 40, lambda c: count(c[STREAMS[0]]["figures"]["ai_frames"].split()[0]) > 0
            )
            await page.wait_for(PAYMENTS, 10, lambda p: "tickets_sent" in p)
            before, paid_before = await page.evaluate(CARDS), await page.evaluate(PAYMENTS)
            await trio.sleep(10)
            after, paid_after = await page.evaluate(CARDS), await page.evaluate(PAYMENTS)

            for name in STREAMS:
                was, now = before[name], after[name]
                assert now["width"] == 320, now
                assert now["segment"] != was["segment"] and now["hash"] != was["hash"], (was, now)
                assert count(now["figures"]["segments_in"]) > count(was["figures"]["segments_in"])
                assert now["figures"]["publish_latency"].endswith("ms"), now
                assert now["figures"]["source"] == "320x180", now
            ai_was, ai_now = before[STREAMS[0]]["figures"], after[STREAMS[0]]["figures"]
            assert ai_now["renditions"] == "source, 144p, ai", ai_now
            assert ai_now["ai"] == "noop (running)", ai_now
            assert ai_now["ai_frames"] != ai_was["ai_frames"], (ai_was, ai_now)
            assert ai_now["ai_frame_latency"].endswith("ms"), ai_now
            assert after[STREAMS[1]]["figures"]["renditions"] == "source, 144p"
            assert "ai" not in after[STREAMS[1]]["figures"]

            assert paid_after["deposit"].endswith("ETH"), paid_after
            assert count(paid_after["tickets_sent"]) > count(paid_before["tickets_sent"])
            assert count(paid_after["tickets_received"]) > 0, paid_after
            points = await page.evaluate(
                "[...document.querySelectorAll('[data-chart] polyline')]"
                ".map(l => l.getAttribute('points').split(' ').length)"
            )
            assert len(points) >= 4 and min(points) >= 10, points
            orchestrators = await page.evaluate(
                "document.getElementById('orchestrators').innerText"
            )
            assert "latency score" in orchestrators and "127.0.0.1:" in orchestrators

            await screenshot(page, "dashboard-desktop.png", 1280, 800, mobile=False)
            height = await page.evaluate("document.documentElement.scrollHeight")
            await screenshot(page, "dashboard-desktop-full.png", 1280, height, mobile=False)
            await screenshot(page, "dashboard-phone.png", 390, 844, mobile=True)
            # The phone layout fits its width (the orchestrators' table scrolls inside it).
            width = await page.evaluate("document.documentElement.scrollWidth")
            assert width <= 390, width
    finally:
        for publisher in publishers:
            publisher.kill()
            await publisher.wait()
