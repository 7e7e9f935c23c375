"""Bars at the hub (core/barfan.py, subscriptions, outbox), with a fake transport and clock:
who gets bars, under which throttle, conflated per (symbol, interval, start) so that a
final bar is never replaced; `list`, `bars: []`, unsubscribe; the bars group is joined
only for bar subscribers."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from marketstream.core.bars import NS, Bar, BarUpdate, EncodedBar
from marketstream.core.codec import CODEC
from marketstream.core.hub import Hub
from marketstream.core.outbox import Outbox
from marketstream.core.requests import RequestError, parse
from marketstream.core.store import MemoryStore
from marketstream.core.tick import Draft
from tests.unit.core.fakes import Clock, FakeTransport, Peer, settle

T = 10_000  # ms: the real interval task never fires during a test
HOUR = 1_699_999_200  # a whole hour, UTC
SYMBOLS = ["AAPL", "MSFT"]

Seen = tuple[str, str, int, int, bool]  # symbol, interval, start - HOUR, count, final


def draft(symbol: str, at: float, price: float = 1.0) -> Draft:
    ts = round((HOUR + at) * NS)
    return Draft.encode({"symbol": symbol, "ts": ts, "price": price, "size": 1.0, "bid": 0.0, "ask": 0.0})


class Rig:
    def __init__(self) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.transport = FakeTransport(self.store)
        self.hub = Hub(self.store, self.transport, clock=self.clock)

    def client(self) -> tuple[Any, Peer]:
        peer = Peer(writable=True)
        conn = self.hub.connect(CODEC["msgpack"], peer.send, peer.closer, peer.writable)
        return conn, peer

    async def subscribe(self, conn: Any, symbols: Sequence[str], throttle: int = 0, **fields: Any) -> dict[str, Any]:
        request = {"op": "subscribe", "id": 1, "symbols": list(symbols), "throttle_ms": throttle, **fields}
        request.setdefault("snapshot", False)
        await self.hub.handle(conn, parse(request))
        await settle()
        return conn.outbox.controls[-1] if conn.outbox.controls else {}

    async def tick(self, symbol: str, at: float, price: float = 1.0) -> None:
        """Publish a tick (the store computes its bars) and hand its bar update to the hub."""
        self.transport.bar_updates.clear()
        await self.transport.publish([draft(symbol, at, price)])
        self._deliver()

    async def finalize(self, at: float) -> None:
        self.transport.bar_updates.clear()
        await self.transport.finalize_bars(SYMBOLS, round((HOUR + at) * NS))
        self._deliver()

    def _deliver(self) -> None:
        for update in self.transport.bar_updates:
            self.hub.barfan.offer(update)

    def fire(self, throttle: int) -> None:
        self.hub.barfan.fire(self.hub.barfan.timers[throttle])


def bars_seen(peer: Peer) -> list[Seen]:
    """The bars in the `bars` frames sent since the last call."""
    return [
        (b["symbol"], b["interval"], b["start"] // NS - HOUR, b["count"], b["final"])
        for f in peer.take()
        if f["type"] == "bars"
        for b in f["bars"]
    ]


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.store.register(SYMBOLS)
    await r.hub.start()
    yield r
    await r.hub.stop()


async def test_bars_go_to_bar_subscribers_only_and_the_bars_group_is_joined_for_them(rig: Rig) -> None:
    ticks_only, tp = rig.client()
    charts, cp = rig.client()
    await rig.subscribe(ticks_only, ["AAPL", "MSFT"])
    assert rig.transport.bars_joined == set(), "no bar subscriber: the hub receives no bars"
    await rig.subscribe(charts, ["AAPL"], bars=["1m", "1s"])
    assert rig.transport.bars_joined == {"AAPL"}
    assert charts.bars == {"AAPL": ("1s", "1m")}
    tp.take(), cp.take()
    await rig.tick("AAPL", 0.5)
    await rig.tick("MSFT", 0.5)
    await settle()
    assert bars_seen(cp) == [("AAPL", "1s", 0, 1, False), ("AAPL", "1m", 0, 1, False)], "its intervals, no others"
    assert bars_seen(tp) == [] and [f["type"] for f in tp.take()] == []


async def test_ack_and_list_show_the_bars_and_bars_empty_stops_them(rig: Rig) -> None:
    conn, peer = rig.client()
    await rig.hub.handle(conn, parse({"op": "subscribe", "id": 1, "symbols": ["AAPL", "MSFT"], "bars": ["5s"]}))
    await rig.hub.handle(conn, parse({"op": "list", "id": 2}))
    await settle()
    frames = peer.take()
    ack = next(f for f in frames if f["type"] == "ack")
    assert ack["bars"] == ["5s"]
    listed = next(f for f in frames if f["type"] == "subscriptions")
    assert listed["subscriptions"] == [
        {"symbol": "AAPL", "throttle_ms": 0, "bars": ["5s"]},
        {"symbol": "MSFT", "throttle_ms": 0, "bars": ["5s"]},
    ]
    conn.outbox.put_bar(EncodedBar(Bar("AAPL", "5s", HOUR, 1, 1, 1, 1, 1, 1)))  # pending when bars stop
    await rig.hub.handle(conn, parse({"op": "subscribe", "id": 3, "symbols": ["AAPL"], "bars": []}))
    await settle()
    assert conn.bars == {"MSFT": ("5s",)}
    assert "AAPL" not in rig.transport.bars_joined, "no one here wants its bars: left"
    assert bars_seen(peer) == [], "pending bars of stopped intervals are dropped"
    await rig.tick("AAPL", 0.5)
    await rig.tick("MSFT", 0.5)
    await settle()
    assert bars_seen(peer) == [("MSFT", "5s", 0, 1, False)]
    await rig.subscribe(conn, ["MSFT"], throttle=T)  # no `bars`: the bars stay, at the new throttle
    assert conn.bars == {"MSFT": ("5s",)} and rig.hub.barfan.routes["MSFT"].keys() == {T}


async def test_a_bad_interval_is_a_bad_request() -> None:
    for bars in (["2s"], "1s", [60]):
        with pytest.raises(RequestError) as caught:
            parse({"op": "subscribe", "id": 7, "symbols": ["AAPL"], "bars": bars})
        assert caught.value.code == "bad_request" and caught.value.request_id == 7


async def test_unsubscribe_ends_the_bars_and_leaves_the_group(rig: Rig) -> None:
    conn, peer = rig.client()
    await rig.subscribe(conn, ["AAPL"], bars=["1s"])
    await rig.hub.handle(conn, parse({"op": "unsubscribe", "id": 2, "symbols": ["AAPL"]}))
    await settle()
    assert conn.bars == {} and rig.transport.bars_joined == set() and not rig.hub.barfan.routes
    peer.take()
    await rig.tick("AAPL", 0.5)
    await settle()
    assert bars_seen(peer) == []


async def test_a_subscribe_whose_bars_cannot_be_joined_changes_nothing(rig: Rig) -> None:
    conn, _ = rig.client()
    await rig.subscribe(conn, ["AAPL"], throttle=T, bars=["1s"])
    rig.transport.fail_join_bars.add("MSFT")
    request = parse({"op": "subscribe", "id": 2, "symbols": ["AAPL", "MSFT"], "bars": ["1m"]})
    with pytest.raises(ConnectionError):
        await rig.hub.handle(conn, request)
    await settle()
    assert conn.subscriptions == {"AAPL": T} and conn.bars == {"AAPL": ("1s",)}, "as before the request"
    assert rig.hub.barfan.routes["AAPL"][T].subscribers == {conn: ("1s",)} and "MSFT" not in rig.hub.barfan.routes


async def test_unthrottled_bars_conflate_what_is_still_pending(rig: Rig) -> None:
    conn, peer = rig.client()
    await rig.subscribe(conn, ["AAPL"], bars=["1s"])
    peer.take()
    peer.is_writable = False  # the client reads slowly: bars wait in its outbox
    for at in (0.1, 0.2, 0.3, 1.1, 1.2):
        await rig.tick("AAPL", at)
    await rig.finalize(2.0)
    await rig.tick("AAPL", 2.5)
    assert [(b.key[2] - HOUR, b.bar.count, b.bar.final) for b in (conn.outbox.bars or {}).values()] == [
        (0, 3, True),
        (1, 2, True),
        (2, 1, False),
    ], "one version per bar, the newest; every final one"


async def test_throttled_bars_leave_once_per_interval_and_never_lose_a_final_bar(rig: Rig) -> None:
    conn, peer = rig.client()
    other, other_peer = rig.client()
    await rig.subscribe(conn, ["AAPL"], throttle=T, bars=["1s", "5s"])
    await rig.subscribe(other, ["AAPL"], throttle=T, bars=["5s"])
    peer.take(), other_peer.take()
    for at in (0.1, 0.2, 0.9, 1.5):
        await rig.tick("AAPL", at)
    await settle()
    assert bars_seen(peer) == [], "nothing before the end of the interval"
    bucket = rig.hub.barfan.routes["AAPL"][T]
    assert len(bucket.pending) == 3, "kept once per process: 1s at 0 (final), 1s at 1, 5s at 0"
    rig.fire(T)
    await settle()
    assert bars_seen(peer) == [
        ("AAPL", "1s", 0, 3, True),
        ("AAPL", "5s", 0, 4, False),
        ("AAPL", "1s", 1, 1, False),
    ]
    assert bars_seen(other_peer) == [("AAPL", "5s", 0, 4, False)], "each subscriber its own intervals"
    rig.fire(T)
    await settle()
    assert bars_seen(peer) == [], "nothing new: nothing sent"
    await rig.finalize(2.0)
    rig.clock.now += T / 1000
    rig.fire(T)
    await settle()
    assert bars_seen(peer) == [("AAPL", "1s", 1, 1, True)], "the bar's end, on the timer"


async def test_moving_to_a_throttle_waits_a_whole_interval_and_keeps_the_bars(rig: Rig) -> None:
    conn, peer = rig.client()
    await rig.subscribe(conn, ["AAPL"], bars=["1s"])
    await rig.tick("AAPL", 0.1)
    await settle()
    peer.take()
    await rig.subscribe(conn, ["AAPL"], throttle=T)  # bars kept, moved to throttle T
    await rig.tick("AAPL", 1.1)  # makes the 1s bar at 0 final
    rig.fire(T)
    await settle()
    assert bars_seen(peer) == [], "its last bars left just now: not due"
    assert [b.bar.final for b in rig.hub.barfan.routes["AAPL"][T].held[conn].values()] == [True, False]
    rig.clock.now += T / 1000
    await rig.tick("AAPL", 1.2)
    rig.fire(T)
    await settle()
    assert bars_seen(peer) == [("AAPL", "1s", 0, 1, True), ("AAPL", "1s", 1, 2, False)], "held bars, not lost"


async def test_a_subscribe_sends_the_open_bars_of_the_intervals_it_adds(rig: Rig) -> None:
    await rig.tick("AAPL", 0.1)
    await rig.tick("AAPL", 0.2)
    conn, peer = rig.client()
    await rig.subscribe(conn, ["AAPL", "MSFT"], bars=["1s"], snapshot=True)
    frames = peer.take()
    assert [f["type"] for f in frames] == ["welcome", "ack", "snapshot", "bars"], "after the ack and the snapshot"
    assert [(b["interval"], b["count"]) for b in frames[-1]["bars"]] == [("1s", 2)]
    await rig.subscribe(conn, ["AAPL"], bars=["1s", "1m"], snapshot=True)
    assert [(b["interval"], b["count"]) for f in peer.take() if f["type"] == "bars" for b in f["bars"]] == [
        ("1m", 2)
    ], "only the interval added"


async def test_the_receive_loop_hands_bar_updates_to_the_bar_routes(rig: Rig) -> None:
    conn, peer = rig.client()
    await rig.subscribe(conn, ["AAPL"], bars=["1h"])
    peer.take()
    rig.transport.push(BarUpdate("AAPL", [Bar("AAPL", "1h", HOUR, 1.0, 2.0, 0.5, 1.5, 7.0, 3)]))
    rig.transport.push(BarUpdate("MSFT", [Bar("MSFT", "1h", HOUR, 1.0, 2.0, 0.5, 1.5, 7.0, 3)]))
    await settle(20)
    assert bars_seen(peer) == [("AAPL", "1h", 0, 3, False)]
    assert rig.hub.barfan.updates == 1


def test_outbox_bars_rank_versions_and_keep_every_start() -> None:
    outbox = Outbox(max_ticks=2)

    def bar(start: int, count: int, final: bool = False, interval: str = "1s") -> EncodedBar:
        return EncodedBar(Bar("A", interval, HOUR + start, 1, 1, 1, 1, 1, count, final))

    assert not outbox
    assert outbox.put_bar(bar(0, 1))
    assert outbox.put_bar(bar(0, 2))
    assert not outbox.put_bar(bar(0, 2)), "the same version again"
    assert outbox.put_bar(bar(0, 2, final=True))
    assert not outbox.put_bar(bar(0, 3)), "a final bar is never replaced by an open one"
    assert outbox.put_bar(bar(1, 1))
    assert outbox and outbox.conflations == 0
    assert outbox.put_bar(bar(0, 1, interval="1m"))
    assert outbox.conflations == 1, "past max_ticks pending bars the client counts as behind"
    outbox.discard_bars(["A"], keep=["1m"])
    assert [(b.bar.interval, b.bar.count) for b in outbox.take_bars()] == [("1m", 1)]
    assert not outbox and outbox.take_bars() == []
