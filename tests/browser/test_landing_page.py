"""The landing page in a real browser: Debian's Chromium driven by Playwright.

`make test` installs Chromium (`apt-get install chromium`); Playwright never downloads one.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

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


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.fail("Chromium is missing: `make test` installs it, or run `apt-get install -y chromium`")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context()
    page = context.new_page()
    yield page
    context.close()


def test_the_page_goes_live_and_shows_updating_ticks(page: Page, embedded_hub: int, tmp_path: Path) -> None:
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"http://127.0.0.1:{embedded_hub}/")
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    rows = page.locator("#rows tr")
    expect(rows).to_have_count(12, timeout=10_000)  # the first 12 symbols of the catalog, snapshots first
    first = rows.first
    seq_before = int(first.locator("td").nth(5).inner_text())
    expect(first.locator("td").nth(5)).not_to_have_text(str(seq_before), timeout=15_000)
    bid = float(first.locator("td").nth(2).inner_text())
    ask = float(first.locator("td").nth(3).inner_text())
    assert bid < ask
    assert int(page.locator("#count").inner_text()) > 12
    page.screenshot(path=str(tmp_path / "landing.png"))
    assert errors == []
