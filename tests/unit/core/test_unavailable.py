"""Symbols whose shard is down: `unavailable` on subscribe, `unsubscribed` when the hub gives up."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from tests.unit.core.fakes import settle
from tests.unit.core.test_hub import SYMBOLS, Rig

DOWN = {"MSFT", "IBM"}


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    r.hub.subscriptions.available = lambda symbol: symbol not in DOWN
    await r.store.register(SYMBOLS)
    await r.hub.start()
    yield r
    await r.hub.stop()


async def test_a_symbol_of_a_down_shard_is_unavailable(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL", "MSFT", "NOPE", "IBM"])
    await settle()
    (ack,) = [r for r in a.replies() if r["type"] == "ack"]
    assert ack["symbols"] == ["AAPL"]
    assert ack["rejected"] == {"MSFT": "unavailable", "IBM": "unavailable", "NOPE": "unknown_symbol"}
    assert set(a.conn.subscriptions) == {"AAPL"} and not DOWN & set(rig.transport.joins)


async def test_the_hub_gives_up_on_a_down_shards_subscriptions(rig: Rig) -> None:
    rig.hub.subscriptions.available = None  # all up while subscribing
    a, b = rig.client(), rig.client()
    await rig.subscribe(a, ["AAPL", "MSFT", "IBM"])
    await rig.subscribe(b, ["AAPL"])
    await settle()
    a.replies(), b.replies()
    ended = rig.hub.end_unavailable(lambda s: s in DOWN)
    assert ended == ["IBM", "MSFT"]
    await rig.feed("MSFT")
    await rig.feed("AAPL")
    await settle()
    frames = a.peer.take() + [{"type": "ticks", "ticks": [{"symbol": x.symbol}]} for x in a.conn.outbox.take_ticks()]
    assert [f for f in frames if f["type"] != "ticks"] == [
        {"type": "unsubscribed", "symbols": ["MSFT", "IBM"], "reason": "unavailable"}
    ]
    ticks = [t["symbol"] for f in frames if f["type"] == "ticks" for t in f["ticks"]]
    assert [r["type"] for r in b.replies()] == []
    assert set(a.conn.subscriptions) == {"AAPL"}
    assert ticks == ["AAPL"], "no tick of an ended symbol after the message"
    assert rig.hub.end_unavailable(lambda s: s in DOWN) == [], "nothing left to end"
    assert not DOWN & rig.hub.membership.joined, "the hub left them"
