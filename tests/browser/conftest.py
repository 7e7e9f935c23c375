"""The dashboard in a real browser: Debian's Chromium driven by Playwright (never a downloaded one).

- `browser`: one headless Chromium for these tests;
- `open_page(url, width, height)`: a page in a fresh context (empty localStorage and
  sessionStorage), with its console errors collected and its WebSocket frames recorded
  and decoded (`Tab.wire`); every tab is closed after the test, and a test fails if its
  console showed an error it did not allow;
- `dashboard_hub`: a hub and a feed of the demo universe on the project's Redis, for a module.
"""

from __future__ import annotations

import re
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, WebSocket, sync_playwright

from feeds.universe import DEFAULT_UNIVERSE
from loadtest.services import Hub, delete_prefix
from tests.support.processes import REDIS_URL, Processes, http_get, require_redis, unique_prefix

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LAPTOP = (1366, 860)
PHONE = (390, 844)
FEED_RATE = 300  # ticks/s over the 48 symbols of the demo universe: about 6 per symbol
# what Chromium itself logs when a connection is refused (a hub that is down): allowed where a test stops one
NETWORK_ERRORS = re.compile(r"WebSocket connection to .* failed|net::ERR_CONNECTION_REFUSED")


@pytest.fixture(scope="package")  # not the session: Playwright's loop must be gone before async tests run
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: `make test` installs it, or run `apt-get install -y chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@dataclass
class WireFrame:
    """One WebSocket frame of the page, decoded: `sent` by the page or received from the hub."""

    connection: int  # 0 for the page's first WebSocket, 1 for the next, ...
    sent: bool
    at: float  # time.monotonic()
    message: dict[str, Any]


@dataclass
class Wire:
    """Every frame of every WebSocket the page opens, decoded from msgpack."""

    urls: list[str] = field(default_factory=list)
    frames: list[WireFrame] = field(default_factory=list)
    text_frames: int = 0

    def attach(self, ws: WebSocket) -> None:
        connection = len(self.urls)
        self.urls.append(ws.url)
        ws.on("framesent", lambda payload: self.record(connection, True, payload))
        ws.on("framereceived", lambda payload: self.record(connection, False, payload))

    def record(self, connection: int, sent: bool, payload: str | bytes) -> None:
        if isinstance(payload, str):
            self.text_frames += 1
            return
        self.frames.append(WireFrame(connection, sent, time.monotonic(), msgpack.unpackb(payload)))

    def received(self, kind: str | None = None, connection: int | None = None) -> list[WireFrame]:
        return [
            f
            for f in self.frames
            if not f.sent
            and (kind is None or f.message.get("type") == kind)
            and (connection is None or f.connection == connection)
        ]

    def requests(self, op: str | None = None) -> list[WireFrame]:
        return [f for f in self.frames if f.sent and (op is None or f.message.get("op") == op)]

    def ticks(self, symbol: str | None = None, after: float = 0.0) -> list[tuple[WireFrame, dict[str, Any]]]:
        """Every tick received (snapshot and ticks frames), with its frame, in order."""
        return [
            (f, t)
            for f in self.frames
            if not f.sent and f.at >= after and f.message.get("type") in ("snapshot", "ticks")
            for t in f.message["ticks"]
            if symbol is None or t["symbol"] == symbol
        ]


@dataclass
class Tab:
    page: Page
    wire: Wire
    errors: list[str]
    allowed: list[re.Pattern[str]] = field(default_factory=list)
    closed: bool = False

    def stats(self) -> dict[str, Any]:
        """The page's own readout (`window.marketstream.stats()`)."""
        return dict(self.page.evaluate("window.marketstream.stats()"))

    def allow(self, pattern: re.Pattern[str]) -> None:
        """Console errors matching `pattern` are expected in this test."""
        self.allowed.append(pattern)

    def close(self) -> None:
        """Close the page's context (before stopping its hub, whose absence it would report)."""
        if not self.closed:
            self.closed = True
            self.page.context.close()

    def unexpected_errors(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in self.allowed)]


OpenPage = Callable[..., Tab]


@pytest.fixture
def open_page(browser: Browser) -> Iterator[OpenPage]:
    tabs: list[Tab] = []

    def opener(url: str, size: tuple[int, int] = LAPTOP) -> Tab:
        context = browser.new_context(viewport={"width": size[0], "height": size[1]})
        page = context.new_page()
        tab = Tab(page, Wire(), [])

        def console(message: ConsoleMessage) -> None:
            if message.type == "error":
                tab.errors.append(message.text)

        page.on("console", console)
        page.on("pageerror", lambda exc: tab.errors.append(f"page error: {exc}"))
        page.on("websocket", tab.wire.attach)
        tabs.append(tab)
        if url:
            page.goto(url)
        return tab

    yield opener
    for tab in tabs:
        tab.close()
    errors = [e for tab in tabs for e in tab.unexpected_errors()]
    assert errors == [], f"console errors: {errors}"


def warm(port: int) -> None:
    """Have a new hub serve the page once: its first request pays for Django's lazy setup
    (URL resolver, template), which a running hub has long paid, and a visitor never sees."""
    for path in ("/", "/static/dashboard/main.js"):
        status, _, _ = http_get(port, path)
        assert status == 200, path


@dataclass
class DashboardHub:
    """A hub and the demo feed on Redis under `prefix`."""

    prefix: str
    procs: Processes
    hub: Hub

    @property
    def url(self) -> str:
        return f"{self.hub.base}/"


@pytest.fixture(scope="module")
def dashboard_hub() -> Iterator[DashboardHub]:
    require_redis()
    prefix = unique_prefix("dashboard")
    procs = Processes()
    try:
        hub = procs.hub(prefix)
        procs.feed(prefix, [i.symbol for i in DEFAULT_UNIVERSE], FEED_RATE)
        warm(hub.port)
        yield DashboardHub(prefix, procs, hub)
    finally:
        procs.stop_all()
        procs.remove_logs()
        delete_prefix(REDIS_URL, prefix)
