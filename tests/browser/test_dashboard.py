"""The dashboard against a real hub and feed on Redis: what a first-time visitor sees, the
watchlist, the quote board, the chart, throttles, the phone width, and `make run`'s page.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from playwright.sync_api import expect

from tests.browser.conftest import PHONE, DashboardHub, OpenPage, Tab

DEFAULT_WATCHLIST = ["AAPL", "MSFT", "NVDA", "SPY", "EUR/USD", "USD/JPY", "BTC/USD", "ETH/USD"]
LIVE = 10_000  # ms: generous on a loaded machine; the first tick's time is asserted separately
FIRST_TICK_MS = 1500  # a first visit's first tick, from the start of the navigation


def shown_symbols(tab: Tab) -> list[str]:
    return list(tab.page.locator("#rows .row").evaluate_all("rows => rows.map(r => r.dataset.symbol)"))


def go_live(tab: Tab) -> None:
    """Wait until the page streams its watchlist (the stream may be live before the catalog is in)."""
    expect(tab.page.locator("#status")).to_have_text("live", timeout=LIVE)
    expect(tab.page.locator("#rows .row").first).to_be_visible()


def wait_js(tab: Tab, expression: str, timeout: float = 10_000) -> None:
    """Wait until `expression` (with `s` = the page's stats) is true."""
    tab.page.wait_for_function(
        f"(() => {{ const s = window.marketstream.stats(); return {expression}; }})()", timeout=timeout
    )


def test_a_first_visit_streams_a_default_watchlist_with_a_chart(
    open_page: OpenPage, dashboard_hub: DashboardHub
) -> None:
    tab = open_page(dashboard_hub.url)
    page = tab.page
    go_live(tab)
    expect(page.locator("#rows .row")).to_have_count(len(DEFAULT_WATCHLIST))
    assert shown_symbols(tab) == DEFAULT_WATCHLIST, "a few equities, FX and crypto pairs of the catalog"
    wait_js(tab, "s.perf.firstTick !== null")
    first_tick_ms = tab.stats()["perf"]["firstTick"]
    # docs/dashboard.md: 430-550 ms in a quiet sitting; 730-894 ms idle and 1,121 ms in a
    # loaded CI run on a machine twice as slow (stop 20). 1.5 s still fails on a page that
    # fetches its modules import by import, or a hub that serves them one at a time.
    assert first_tick_ms < FIRST_TICK_MS, f"the first tick came {first_tick_ms:.0f} ms after the navigation started"

    # names, prices that change, and change from the catalog's reference
    aapl = page.locator('#rows .row[data-symbol="AAPL"]')
    expect(aapl.locator(".name")).to_have_text("Apple Inc.")
    last = aapl.locator(".cell.last")
    expect(last).to_have_text(re.compile(r"^\d+\.\d\d$"))
    before = last.inner_text()
    expect(last).not_to_have_text(before, timeout=5000)
    expect(page.locator("#rows .cell.last.up, #rows .cell.last.down").first).to_be_attached(timeout=5000)  # the flash
    # one read of both cells: two reads may straddle a redraw and see bid and ask of different ticks
    bid, ask = aapl.evaluate("row => ['bid', 'ask'].map(k => parseFloat(row.querySelector('.cell.' + k).textContent))")
    assert bid < ask
    price = float(last.inner_text())
    change, pct = aapl.locator(".cell.change").inner_text(), aapl.locator(".cell.pct").inner_text()
    assert re.fullmatch(r"[+-]?\d+\.\d\d", change) and re.fullmatch(r"[+-]?\d+\.\d\d%", pct)
    assert abs(float(change) - (price - 227.50)) < 1.0, "change from the reference price 227.50 (the feed moves on)"
    eur = page.locator('#rows .row[data-symbol="EUR/USD"] .cell.last')
    expect(eur).to_have_text(re.compile(r"^1\.\d{5}$"))  # FX with its five decimals
    inked = aapl.locator(".cell.trend canvas").evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some((v, i) => i % 4 === 3 && v > 0)"
    )
    assert inked, "the sparkline is drawn"

    # the chart of the first symbol: candles and ticks, from history, moving
    expect(page.locator("#chart-symbol")).to_have_text("AAPL")
    wait_js(tab, "s.chart.loaded && s.chart.symbol === 'AAPL' && s.chart.candles > 0 && s.chart.ticks > 5")
    chart = tab.stats()["chart"]
    wait_js(tab, f"s.chart.ticks > {chart['ticks']} && s.chart.lastCandle.time > {chart['lastCandle']['time']}")
    subscribes = [f.message for f in tab.wire.requests("subscribe")]
    assert any(m["symbols"] == ["AAPL"] and m["bars"] == ["1s"] for m in subscribes), subscribes
    assert tab.wire.text_frames == 0, "binary frames only: marketstream.v1.msgpack both ways"
    assert tab.wire.received("bars"), "bars frames feed the candles"

    # the readouts
    expect(page.locator("#rtt")).to_have_text(re.compile(r"^\d+(\.\d)? ms$"))
    expect(page.locator("#tick-age")).to_have_text(re.compile(r"^-?\d+(\.\d)? ms$"))
    expect(page.locator("#lost")).to_have_text("0")
    rate = float(page.locator("#rate").inner_text())
    assert rate > 10, f"{rate} updates/s over 8 symbols at about 6 ticks/s each"


def test_search_add_remove_reorder_and_named_watchlists_survive_a_reload(
    open_page: OpenPage, dashboard_hub: DashboardHub
) -> None:
    tab = open_page(dashboard_hub.url)
    page = tab.page
    go_live(tab)
    search = page.locator("#search")
    search.fill("micro")  # by name: Microsoft, Advanced Micro Devices
    results = page.locator("#results li")
    expect(results).to_have_count(2)
    assert results.evaluate_all("li => li.map(l => l.dataset.symbol)") == ["MSFT", "AMD"]
    expect(results.first.locator(".add")).to_have_text("added")
    search.fill("netfl")
    expect(results.first).to_have_attribute("data-symbol", "NFLX")
    search.press("Enter")
    search.fill("gbpusd")  # a symbol without its slash
    results.first.click()
    expect(page.locator("#rows .row")).to_have_count(10)
    for symbol in ("NFLX", "GBP/USD"):
        expect(page.locator(f'#rows .row[data-symbol="{symbol}"] .cell.last')).to_have_text(re.compile(r"\d"))

    # remove MSFT: its row goes, and no tick of it arrives after the hub's ack
    page.locator('#rows .row[data-symbol="MSFT"] button.remove').click()
    expect(page.locator('#rows .row[data-symbol="MSFT"]')).to_have_count(0)
    wait_for_ack(tab, "unsubscribe", "MSFT")
    acked = next(f for f in tab.wire.received("ack") if f.message["op"] == "unsubscribe").at
    page.wait_for_timeout(1500)  # (not time.sleep: Playwright delivers frames while it waits)
    assert not tab.wire.ticks("MSFT", after=acked), "updates of a removed symbol stop"
    assert len(tab.wire.ticks("NVDA", after=acked)) >= 3, "the others go on"

    # the keyboard: select, move, remove; the chart follows the selection
    order = shown_symbols(tab)
    page.locator("#rows .row").first.click()
    page.keyboard.press("ArrowDown")
    expect(page.locator("#rows .row.selected")).to_have_attribute("data-symbol", order[1])
    expect(page.locator("#chart-symbol")).to_have_text(order[1])
    wait_js(tab, f"s.chart.symbol === {order[1]!r} && s.chart.loaded")
    page.keyboard.press("Alt+ArrowDown")
    moved = [order[0], order[2], order[1], *order[3:]]
    expect(page.locator("#rows .row")).to_have_count(len(order))
    assert shown_symbols(tab) == moved
    page.keyboard.press("Delete")
    remaining = [s for s in moved if s != order[1]]
    expect(page.locator("#rows .row")).to_have_count(len(remaining))
    expect(page.locator("#rows .row.selected")).to_have_attribute("data-symbol", moved[3])

    # sorting: ascending, descending, then the watchlist's order again
    header = page.locator("#board .head .symbol")
    header.click()
    expect(header).to_have_attribute("aria-sort", "ascending")
    assert shown_symbols(tab) == sorted(remaining)
    header.click()
    assert shown_symbols(tab) == sorted(remaining, reverse=True)
    header.click()
    expect(header).to_have_attribute("aria-sort", "none")
    assert shown_symbols(tab) == remaining

    # a second, named watchlist
    page.locator("#list-new").click()
    name = page.locator("#list-name")
    expect(name).to_be_focused()
    name.fill("Crypto")
    name.press("Enter")
    expect(page.locator("#list option:checked")).to_have_text("Crypto (0)")
    expect(page.locator("#empty")).to_be_visible()
    for query in ("eth/usd", "solana"):
        search.fill(query)
        search.press("Enter")
    expect(page.locator("#rows .row")).to_have_count(2)
    wait_js(tab, "s.symbols['SOL/USD'] && s.symbols['SOL/USD'].price !== null")

    # a reload keeps both lists, their order and the one shown
    page.reload()
    go_live(tab)
    assert shown_symbols(tab) == ["ETH/USD", "SOL/USD"]
    page.locator("#list").select_option(index=0)
    expect(page.locator("#rows .row")).to_have_count(len(remaining))
    assert shown_symbols(tab) == remaining
    expect(page.locator(f'#rows .row[data-symbol="{remaining[0]}"] .cell.last')).to_have_text(re.compile(r"\d"))


def wait_for_ack(tab: Tab, op: str, symbol: str, start: int = 0, timeout: float = 5.0) -> None:
    """Wait for an ack of `op` that names `symbol`, from the `start`th ack on."""
    deadline = time.monotonic() + timeout
    while not any(f.message["op"] == op and symbol in f.message["symbols"] for f in tab.wire.received("ack")[start:]):
        assert time.monotonic() < deadline, f"no ack of {op} {symbol}"
        tab.page.wait_for_timeout(50)


def test_a_throttle_resubscribes_and_the_update_rate_drops(open_page: OpenPage, dashboard_hub: DashboardHub) -> None:
    tab = open_page(dashboard_hub.url)
    page = tab.page
    go_live(tab)
    wait_js(tab, "s.symbols.NVDA.rate >= 3")  # every tick: about 6 a second
    row = page.locator('#rows .row[data-symbol="NVDA"]')
    # the cell is drawn on the page's own cadence, after the state: wait for it to show >= 2
    expect(row.locator(".cell.rate")).to_have_text(re.compile(r"^([2-9]|\d{2,})\.\d$"), timeout=5000)
    acks = len(tab.wire.received("ack"))
    row.locator("select.throttle").select_option("1000")
    wait_for_ack(tab, "subscribe", "NVDA", start=acks)
    resubscribe = [f.message for f in tab.wire.requests("subscribe") if f.message["symbols"] == ["NVDA"]]
    assert resubscribe[-1]["throttle_ms"] == 1000 and "since" not in resubscribe[-1]
    wait_js(tab, "s.symbols.NVDA.effective === 1000 && s.symbols.NVDA.rate <= 1.5", timeout=6000)
    expect(row.locator(".cell.rate")).to_have_text(re.compile(r"^[01]\.\d$"))
    # the first throttled tick may follow the last unthrottled one (nothing skipped); the
    # next, a second later, stands in for the ticks between: wait for it
    page.wait_for_function("window.marketstream.stats().symbols.NVDA.conflated > 0", timeout=3000)
    stats = tab.stats()["symbols"]["NVDA"]
    assert stats["conflated"] > 0 and stats["lost"] == 0, "skipped seqs are accounted for as conflated"
    assert stats["throttle"] == 1000
    page.reload()
    go_live(tab)
    expect(page.locator('#rows .row[data-symbol="NVDA"] select.throttle')).to_have_value("1000")


def test_the_interval_selector_reloads_the_chart_and_moves_the_bars(
    open_page: OpenPage, dashboard_hub: DashboardHub
) -> None:
    tab = open_page(dashboard_hub.url)
    page = tab.page
    go_live(tab)
    wait_js(tab, "s.chart.loaded && s.chart.symbol === 'AAPL'")
    page.locator('#intervals button[data-interval="5s"]').click()
    expect(page.locator('#intervals button[data-interval="5s"]')).to_have_attribute("aria-pressed", "true")
    wait_js(tab, "s.chart.loaded && s.chart.interval === '5s' && s.chart.candles > 0")
    assert tab.stats()["chart"]["lastCandle"]["time"] % 5 == 0, "5 s bars start on multiples of 5 s"
    page.locator('#rows .row[data-symbol="BTC/USD"] .cell.symbol').click()
    wait_js(tab, "s.chart.loaded && s.chart.symbol === 'BTC/USD' && s.chart.candles > 0")
    subscribes = [f.message for f in tab.wire.requests("subscribe")]
    assert any(m["symbols"] == ["AAPL"] and m["bars"] == ["5s"] for m in subscribes), subscribes
    assert any(m["symbols"] == ["AAPL"] and m["bars"] == [] for m in subscribes), "the old symbol's bars stop"
    assert any(m["symbols"] == ["BTC/USD"] and m["bars"] == ["5s"] for m in subscribes)
    count = tab.stats()["chart"]["ticks"]
    wait_js(tab, f"s.chart.ticks > {count}")


def test_phone_width_has_no_horizontal_scrolling(open_page: OpenPage, dashboard_hub: DashboardHub) -> None:
    tab = open_page(dashboard_hub.url, PHONE)
    page = tab.page
    go_live(tab)
    expect(page.locator("#rows .row")).to_have_count(len(DEFAULT_WATCHLIST))
    wait_js(tab, "s.chart.loaded && s.chart.candles > 0")
    widths = page.evaluate("[document.documentElement.scrollWidth, document.body.scrollWidth, innerWidth]")
    assert widths[0] <= widths[2] and widths[1] <= widths[2], f"scroll width, body, viewport: {widths}"
    for selector in ("#rows .row:first-child .cell.last", "#rows .row:first-child .cell.pct", "#candles", "#details"):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= PHONE[0], selector
    expect(page.locator("#rows .cell.bid").first).to_be_hidden()  # the phone's columns: symbol, last, % change, trend
    # the throttle, hidden on the board, is in the selected symbol's details
    page.locator("#details select.throttle").select_option("250")
    wait_js(tab, "s.symbols.AAPL.effective === 250")


def test_make_run_serves_the_page_and_its_files_without_the_admin(open_page: OpenPage, embedded_hub: int) -> None:
    """The embedded default (no Redis), as `make run` starts it but without MARKETSTREAM_ADMIN."""
    tab = open_page(f"http://127.0.0.1:{embedded_hub}/")
    go_live(tab)
    expect(tab.page.locator("#rows .row")).to_have_count(len(DEFAULT_WATCHLIST))
    wait_js(tab, "s.chart.loaded && s.chart.candles > 0 && s.lost === 0")
    for path in ("dashboard/main.js", "vendor/lightweight-charts/lightweight-charts.standalone.production.mjs"):
        response = tab.page.request.get(f"http://127.0.0.1:{embedded_hub}/static/{path}")
        assert response.status == 200 and response.headers["content-type"].startswith("text/javascript"), path


def test_the_readme_screenshot(open_page: OpenPage, dashboard_hub: DashboardHub, tmp_path: Path) -> None:
    """Last in this module, so that the chart has some history. `make screenshot` sets
    MARKETSTREAM_SCREENSHOT=docs/dashboard.png; otherwise it goes to a temporary directory."""
    tab = open_page(dashboard_hub.url)
    page = tab.page
    go_live(tab)
    wait_js(tab, "s.chart.loaded && s.chart.candles >= 10 && Object.values(s.symbols).every((x) => x.price !== null)")
    page.locator('#rows .row[data-symbol="MSFT"] select.throttle').select_option("250")
    page.wait_for_timeout(2500)  # updates/s readouts, sparklines
    shot = os.environ.get("MARKETSTREAM_SCREENSHOT")
    page.screenshot(path=shot or str(tmp_path / "dashboard.png"))


MODELS = """async () => {
  const { backoff } = await import("/static/dashboard/stream.js");
  const { SeqBook } = await import("/static/dashboard/accounting.js");
  const { Rates } = await import("/static/dashboard/rates.js");
  const { Catalog } = await import("/static/dashboard/catalog.js");
  const { Watchlists } = await import("/static/dashboard/watchlists.js");
  const out = {};
  out.backoff = [0, 1, 2, 5, 9].map((n) => [backoff(n, () => 0), backoff(n, () => 1)]);

  const book = new SeqBook();
  const tick = (seq, conflated) => ({ symbol: "A", seq, ...(conflated ? { conflated } : {}) });
  book.acked({ symbols: ["A"], epochs: { A: "e1" } });
  const taken = [book.take(tick(10), true), book.take(tick(11)), book.take(tick(13, 1)), book.take(tick(16))];
  taken.push(book.take(tick(16)));
  const beforeReset = { ...book.entry("A") };
  book.reset("A", "e2");
  book.take(tick(1));
  book.take(tick(2));
  const afterReset = { ...book.entry("A") };
  const since = book.since(["A", "B"]);
  book.acked({ symbols: ["A"], epochs: { A: "e2" }, recovered: { A: false } });
  out.book = { taken, beforeReset, afterReset, since, afterRefusal: { ...book.entry("A") } };

  let now = 0;
  const rates = new Rates(() => now);
  for (let k = 0; k < 40; k++) { now = k * 50; rates.count("A"); }  // 20 a second for 2 s
  now = 2000;
  out.rates = [rates.rate("A"), rates.rate("B"), rates.total()];
  now = 10_000;
  out.rates.push(rates.rate("A"));

  const catalog = new Catalog(null);
  catalog.entries = new Map(["MSFT Microsoft Corp.", "AMD Advanced Micro Devices Inc.", "EUR/USD Euro / US Dollar",
    "EUR/GBP Euro / British Pound", "MU Micron Technology"].map((line) => {
    const [symbol, ...name] = line.split(" ");
    return [symbol, { symbol, name: name.join(" "), key: symbol.replace("/", "") }];
  }));
  out.search = ["micro", "eurusd", "eur", "mu", "zzz", " "].map((q) => catalog.search(q).map((e) => e.symbol));

  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const lists = new Watchlists(storage);
  lists.ensure(["A", "B", "C"]);
  lists.add("D"); lists.add("A"); lists.move("D", -2); lists.remove("B"); lists.setThrottle("C", 250);
  lists.create("Second"); lists.add("X"); lists.select(0);
  const reloaded = new Watchlists(storage);
  out.lists = [reloaded.lists.map((l) => [l.name, l.symbols]), reloaded.state.active, reloaded.throttle("C")];
  reloaded.drop(); reloaded.drop();
  out.lists.push(reloaded.lists.length);
  return out;
}"""


def test_the_page_s_models_in_the_browser(open_page: OpenPage, embedded_hub: int) -> None:
    """Backoff, accounting, rates, search and watchlists: the page's own modules, run in Chromium."""
    tab = open_page(f"http://127.0.0.1:{embedded_hub}/")
    out = tab.page.evaluate(MODELS)
    assert out["backoff"] == [[250, 500], [500, 1000], [1000, 2000], [7500, 15000], [7500, 15000]], (
        "equal jitter, 15 s cap"
    )
    book = out["book"]
    assert book["taken"] == [True, True, True, True, False], "a seq already received is dropped"
    assert (book["beforeReset"]["lost"], book["beforeReset"]["conflated"], book["beforeReset"]["duplicates"]) == (
        2,
        1,
        1,
    )
    after = book["afterReset"]
    assert (after["epoch"], after["seq"], after["lost"], after["resets"]) == ("e2", 2, 2, 1), (
        "no loss counted at a reset"
    )
    assert book["since"] == {"A": {"seq": 2, "epoch": "e2"}}
    assert book["afterRefusal"]["seq"] is None and book["afterRefusal"]["unrecovered"] == 1, "a snapshot comes instead"
    assert out["rates"] == [20, 0, 20, 0]
    assert out["search"] == [["MSFT", "MU", "AMD"], ["EUR/USD"], ["EUR/GBP", "EUR/USD"], ["MU"], [], []]
    assert out["lists"] == [[["Watchlist", ["A", "D", "C"]], ["Second", ["X"]]], 0, 250, 1]
