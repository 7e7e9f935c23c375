"""The dashboard on a hub that requires a key: it asks for one, trades it for tokens and keeps
only the key (in this tab's sessionStorage); symbols the key may not see are shown as such,
whether the subscribe refused them or the hub ended them when the key lost them."""

from __future__ import annotations

import re

from playwright.sync_api import expect

from feeds.universe import DEFAULT_UNIVERSE
from tests.browser.conftest import OpenPage, warm
from tests.support.keys import deployment

ENTITLED = "AAPL,MSFT,EUR/USD,BTC/USD,ETH/USD"
REFUSED = re.compile(r"status of 401")  # Chromium's line for the refused key's POST /api/v1/tokens


def test_a_hub_that_requires_a_key(open_page: OpenPage, redis_url: str) -> None:
    symbols = [*(i.symbol for i in DEFAULT_UNIVERSE[:12]), "EUR/USD", "BTC/USD", "ETH/USD"]
    with deployment("dash-keys", redis_url, symbols=symbols, rate=100) as d:
        key = d.store.create("desk", "--symbols", ENTITLED)
        hub = d.hubs[0]
        warm(hub.port)
        tab = open_page(f"{hub.base}/")
        tab.allow(REFUSED)
        page = tab.page
        form = page.locator("#key-form")
        expect(form).to_be_visible()
        expect(page.locator("#status")).to_have_text("a key is required")
        assert tab.wire.urls == [], "no handshake without a key"

        page.locator("#key").fill("ms_" + "x" * 43)  # a wrong key: said so, nothing else happens
        page.locator("#key-form button[type=submit]").click()
        expect(page.locator("#key-message")).to_contain_text("the key was refused")
        assert tab.wire.urls == []

        page.locator("#key").fill(key)
        page.locator("#key-form button[type=submit]").click()
        expect(page.locator("#status")).to_have_text("live", timeout=10_000)
        expect(form).to_be_hidden()
        expect(page.locator("#rows .row")).to_have_count(5)  # the defaults the key may see
        expect(page.locator('#rows .row[data-symbol="BTC/USD"] .cell.last')).to_have_text(re.compile(r"\d"))
        (url,) = tab.wire.urls
        assert re.search(r"\?token=mst_", url) and key not in url, "the stream gets a token, never the key"
        kept = page.evaluate("[sessionStorage.getItem('marketstream.key'), JSON.stringify(localStorage)]")
        assert kept[0] == key and key not in kept[1], "the key stays in this tab's sessionStorage only"
        assert page.locator("#key").input_value() == ""

        # the key loses BTC/USD while connected: the hub ends it, the board says why
        d.store.run(
            "from consumers.models import ApiKey; k = ApiKey.objects.get(name='desk'); "
            "k.symbols = 'AAPL,MSFT,EUR/USD,ETH/USD'; k.save()"
        )
        badge = page.locator('#rows .row[data-symbol="BTC/USD"] .badge')
        expect(badge).to_have_text("forbidden", timeout=15_000)
        ended = [f.message for f in tab.wire.received("unsubscribed")]
        assert ended == [{"type": "unsubscribed", "symbols": ["BTC/USD"], "reason": "forbidden"}]
        expect(page.locator('#rows .row[data-symbol="BTC/USD"]')).to_have_class(re.compile(r"\brefused\b"))

        # a reload keeps the key (this tab) and the watchlist; the subscribe refuses BTC/USD
        page.reload()
        expect(page.locator("#status")).to_have_text("live", timeout=10_000)
        expect(badge).to_have_text("forbidden")
        refused = [f.message["rejected"] for f in tab.wire.received("ack", connection=1) if f.message["rejected"]]
        assert refused == [{"BTC/USD": "forbidden"}]
        expect(page.locator('#rows .row[data-symbol="ETH/USD"] .cell.last')).to_have_text(re.compile(r"\d"))
        expect(page.locator("#notice")).to_contain_text("BTC/USD (forbidden)")
        tab.close()
