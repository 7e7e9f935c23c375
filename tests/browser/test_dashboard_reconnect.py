"""The dashboard through a hub restart: it reconnects by itself and resumes with `since`,
every seq accounted for across the two connections (no gap, no duplicate, no snapshot);
and through a `reset`, which restarts the accounting without counting a loss."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

import redis
from playwright.sync_api import expect

from tests.browser.conftest import NETWORK_ERRORS, DashboardHub, OpenPage, warm
from tests.support.processes import REDIS_URL, Processes


def test_a_restarted_hub_is_reconnected_and_resumed_without_a_seq_gap(
    open_page: OpenPage, dashboard_hub: DashboardHub, procs: Processes
) -> None:
    hub = procs.hub(dashboard_hub.prefix)  # a hub of its own, on the module's feed
    warm(hub.port)
    tab = open_page(f"{hub.base}/")
    tab.allow(NETWORK_ERRORS)  # Chromium logs each refused attempt while the hub is down
    page = tab.page
    status = page.locator("#status")
    expect(status).to_have_text("live", timeout=10_000)
    page.wait_for_function("(window.marketstream.stats().symbols.AAPL || {}).seq > 0")
    page.wait_for_timeout(1000)

    hub.stop()  # SIGTERM: uvicorn closes the WebSocket with 1012
    expect(status).not_to_have_text("live", timeout=5000)
    page.wait_for_timeout(1500)  # the feed goes on: these ticks are missed, and kept in history
    restarted = procs.hub(dashboard_hub.prefix, port=hub.port)
    expect(status).to_have_text("live", timeout=20_000)
    page.wait_for_timeout(1000)
    assert restarted.running()

    wire = tab.wire
    assert len(wire.urls) >= 2 and tab.stats()["reconnects"] == 1
    closes = [f for f in wire.received() if f.connection == 0]
    assert closes, "the first connection received frames"
    last = max(f.connection for f in wire.frames)
    resubscribes = [f.message for f in wire.requests("subscribe") if f.connection == last]
    assert resubscribes, "the page subscribed again on the new connection"
    held = set(tab.stats()["symbols"])
    since = {s for m in resubscribes for s in m.get("since", {})}
    assert since == held, "every symbol resumed from the seq the page held"
    recovered: dict[str, bool] = {}
    for ack in wire.received("ack", connection=last):
        recovered.update(ack.message.get("recovered", {}))
    assert recovered == dict.fromkeys(held, True), "the hub recovered every one from its history"
    assert not wire.received("snapshot", connection=last), "a recovery, not a new start"

    # every seq accounted for, across both connections: seq - previous - 1 == conflated (0 at every tick)
    previous: dict[str, int] = {}
    after_restart: defaultdict[str, int] = defaultdict(int)
    for frame, tick in wire.ticks():
        symbol, seq = tick["symbol"], tick["seq"]
        if symbol in previous:
            assert seq - previous[symbol] - 1 == tick.get("conflated", 0), f"{symbol}: {previous[symbol]} then {seq}"
        previous[symbol] = seq
        if frame.connection == last:
            after_restart[symbol] += 1
    assert set(after_restart) == held, "every symbol streams again"
    stats: dict[str, Any] = tab.stats()
    assert stats["lost"] == 0 and all(s["recovered"] == 1 and s["unrecovered"] == 0 for s in stats["symbols"].values())
    expect(page.locator("#reconnects")).to_have_text("1")
    expect(page.locator("#lost")).to_have_text("0")
    tab.close()


def test_a_reset_restarts_the_accounting_without_a_false_loss(open_page: OpenPage, dashboard_hub: DashboardHub) -> None:
    """The store loses a symbol's seq (as a Redis that lost its data would): a new epoch, `reset`.
    Often the hub has no live tick of KO yet when the seq is lost (the page's seq comes from
    the snapshot): the hub must still reset the page, which its ack told the old epoch."""
    tab = open_page(dashboard_hub.url)
    page = tab.page
    expect(page.locator("#status")).to_have_text("live", timeout=10_000)
    expect(page.locator("#rows .row").first).to_be_visible()  # the catalog is in
    search = page.locator("#search")
    search.fill("coca")
    expect(page.locator("#results li").first).to_have_attribute("data-symbol", "KO")
    search.press("Enter")
    page.wait_for_function("(window.marketstream.stats().symbols.KO || {}).seq > 3")
    before = tab.stats()["symbols"]["KO"]
    client = redis.Redis.from_url(REDIS_URL)
    try:
        prefix = dashboard_hub.prefix  # what a Redis that lost its data has not: publish.lua starts a new epoch
        with client.pipeline(transaction=True) as forget:  # at once: no publish in between
            for name in ("seq", "epoch", "snapshot", "bar"):
                forget.hdel(f"{prefix}:{name}", "KO")
            forget.delete(f"{prefix}:history:KO")
            forget.execute()
    finally:
        client.close()
    deadline = time.monotonic() + 20  # generous: a loaded machine can hold a hub back for seconds
    while not tab.wire.received("reset"):
        seqs = [t["seq"] for _, t in tab.wire.ticks("KO")][-5:]
        assert time.monotonic() < deadline, (
            f"no reset; the last seqs of KO: {seqs}; page: {tab.stats()['symbols']['KO']}\n{dashboard_hub.procs.logs()}"
        )
        page.wait_for_timeout(100)
    (reset,) = [f.message for f in tab.wire.received("reset")]
    page.wait_for_function("window.marketstream.stats().symbols.KO.resets === 1", timeout=2000)
    assert reset["symbol"] == "KO" and reset["epoch"] != before["epoch"]
    page.wait_for_timeout(1000)
    after = tab.stats()["symbols"]["KO"]
    first = next(t["seq"] for f, t in tab.wire.ticks("KO") if f.at > tab.wire.received("reset")[0].at)
    assert after["epoch"] == reset["epoch"] and first == 1 < before["seq"], f"seq started again: {first}"
    assert after["lost"] == 0, "no false loss across the reset"
    expect(page.locator("#notice")).to_contain_text("KO: its seq started again")
