"""Headless Chromium driven over the Chrome DevTools Protocol, for tests and benchmarks.

How this works: Chromium (the Debian package) starts with ``--remote-debugging-port=0`` and a
fresh profile; it prints the browser's DevTools WebSocket URL on stderr. One WebSocket
(trio-websocket) carries every command: ``Target.createTarget`` opens a page,
``Target.attachToTarget`` with ``flatten`` gives a session id, and page commands
(``Runtime.evaluate``, ``Page.captureScreenshot``) carry that id. A reader task routes each
answer to its waiting command by id; events are ignored.
"""

from __future__ import annotations

import base64
import itertools
import json
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import attrs
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

__all__ = ["Browser", "Page", "chromium_path", "open_browser"]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns",
    "--remote-debugging-port=0",
    "--window-size=1280,800",
)
"""As the machine notes advise for this closed network, plus autoplay and a fake camera."""


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class BrowserError(Exception):
    """A DevTools command failed, or the page threw."""


@attrs.define
class Browser:
    """One Chromium process and its DevTools connection."""

    _ws: WebSocketConnection
    _ids: itertools.count[int] = attrs.Factory(lambda: itertools.count(1))
    _waiting: dict[int, tuple[trio.Event, list[dict[str, Any]]]] = attrs.Factory(dict)

    async def command(
        self, method: str, params: dict[str, Any] | None = None, session: str | None = None
    ) -> dict[str, Any]:
        number = next(self._ids)
        message: dict[str, Any] = {"id": number, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        done = trio.Event()
        box: list[dict[str, Any]] = []
        self._waiting[number] = (done, box)
        await self._ws.send_message(json.dumps(message))
        await done.wait()
        answer = box[0]
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    async def read_answers(self) -> None:
        while True:
            message = json.loads(await self._ws.get_message())
            waiting = self._waiting.pop(message.get("id", -1), None)
            if waiting is not None:
                waiting[1].append(message)
                waiting[0].set()

    async def new_page(self, url: str, *, new_window: bool = False) -> Page:
        """Opens ``url`` in a new tab (or, with ``new_window``, a window of its own: a player
        that must present frames needs to be the visible tab of its window)."""
        target = await self.command(
            "Target.createTarget", {"url": "about:blank", "newWindow": new_window}
        )
        attached = await self.command(
            "Target.attachToTarget", {"targetId": target["targetId"], "flatten": True}
        )
        page = Page(browser=self, session=attached["sessionId"])
        await page.command("Page.enable")
        await page.command("Runtime.enable")
        await page.command("Page.navigate", {"url": url})
        await page.wait_for(
            f"location.href === {json.dumps(url)} && document.readyState === 'complete'", 30
        )
        return page


@attrs.define
class Page:
    """A tab, addressed by its DevTools session."""

    browser: Browser
    session: str

    async def command(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        return await self.browser.command(method, params, self.session)

    async def evaluate(self, expression: str) -> Any:
        """The value of a JavaScript expression (awaited if it is a promise)."""
        result = await self.command(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} threw: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait_for(
        self, expression: str, seconds: float, check: Callable[[Any], bool] = bool
    ) -> Any:
        """Evaluates ``expression`` every 0.2 s until ``check`` accepts its value."""
        value: Any = None
        with trio.move_on_after(seconds):
            while True:
                value = await self.evaluate(expression)
                if check(value):
                    return value
                await trio.sleep(0.2)
        raise TimeoutError(f"{expression!r} still {value!r} after {seconds} s")

    async def screenshot(self, path: Path) -> None:
        shot = await self.command("Page.captureScreenshot", {"format": "png"})
        await trio.Path(path).write_bytes(base64.b64decode(shot["data"]))


@asynccontextmanager
async def open_browser(log: Path, *extra_flags: str) -> AsyncIterator[Browser]:
    """Starts headless Chromium with a fresh profile, ``CHROMIUM_FLAGS`` and ``extra_flags``;
    its stderr goes to ``log``."""
    executable = chromium_path()
    if executable is None:
        raise FileNotFoundError("chromium is not installed (scripts/setup installs it)")
    # Chromium's helper processes may still write to the profile as it exits.
    with tempfile.TemporaryDirectory(
        prefix="lpstream-chromium-", ignore_cleanup_errors=True
    ) as profile:
        with log.open("wb") as err:
            process = await trio.lowlevel.open_process(
                [
                    executable,
                    *CHROMIUM_FLAGS,
                    *extra_flags,
                    f"--user-data-dir={profile}",
                    "about:blank",
                ],
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        try:
            url = await _devtools_url(log, process)
            async with open_websocket_url(url, max_message_size=64 << 20) as ws:
                browser = Browser(ws=ws)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(browser.read_answers)
                    yield browser
                    nursery.cancel_scope.cancel()
        finally:
            process.terminate()
            with trio.move_on_after(5) as cleanup:
                cleanup.shield = True
                await process.wait()
            if process.returncode is None:
                process.kill()


async def _devtools_url(log: Path, process: trio.Process) -> str:
    with trio.fail_after(30):
        while True:
            text = await trio.Path(log).read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith("DevTools listening on "):
                    return line.removeprefix("DevTools listening on ").strip()
            if process.returncode is not None:
                raise RuntimeError(f"chromium exited with {process.returncode}: see {log}")
            await trio.sleep(0.1)
