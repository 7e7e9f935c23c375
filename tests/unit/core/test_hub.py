"""The hub with a fake tick transport and a fake clock (no I/O): subscribe, unsubscribe,
the snapshot race, throttle changes, limits, failures, and the receive loop."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import pytest

from marketstream.core import hub as hub_module
from marketstream.core import subscriptions as subscriptions_module
from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.entitlements import Entitlement
from marketstream.core.hub import PROTOCOL_VERSION, Hub
from marketstream.core.limits import Limits
from marketstream.core.requests import Request, parse
from marketstream.core.store import History, MemoryStore
from marketstream.core.tick import EncodedTick
from marketstream.core.transport import MalformedMessage
from tests.unit.core.fakes import Clock, FakeTransport, Peer, draft, settle, tick

T = 10_000  # ms: long enough that the real interval task never fires during a test
SYMBOLS = ["AAPL", "MSFT", "EUR/USD", "IBM"]


def t(symbol: str, seq: int) -> EncodedTick:
    return tick(symbol, seq)


class Client:
    """A connection of the hub and the peer at its other end."""

    def __init__(
        self,
        hub: Hub,
        writable: bool = False,
        limits: Limits | None = None,
        session: str = "",
        entitlement: Entitlement | None = None,
    ) -> None:
        self.peer = Peer(writable)
        peer = self.peer
        self.conn = hub.connect(CODEC["msgpack"], peer.send, peer.closer, peer.writable, session, limits, entitlement)

    def pending(self) -> list[tuple[str, int]]:
        """(symbol, seq) of every tick delivered since the last call: sent, or still in the outbox."""
        sent = self.peer.ticks()
        return sent + [(x.symbol, x.seq) for x in self.conn.outbox.take_ticks()]

    def replies(self) -> list[dict[str, Any]]:
        """The frames other than ticks sent since the last call (welcome, acks, snapshots...)."""
        return [f for f in self.peer.take() if f["type"] != "ticks"]


class Rig:
    def __init__(self, limits: Limits | None = None, history_length: int = 2000) -> None:
        self.clock = Clock()
        self.store = MemoryStore(history_length)
        self.transport = FakeTransport(self.store)
        self.hub = Hub(self.store, self.transport, limits, clock=self.clock)

    async def publish(self, symbol: str, n: int = 1) -> list[EncodedTick]:
        """Publish `n` ticks of `symbol` (kept by the store, the seq authority; not delivered)."""
        return await self.transport.publish([draft(symbol, float(i)) for i in range(n)])

    async def feed(self, symbol: str, n: int = 1) -> list[EncodedTick]:
        """Publish `n` ticks of `symbol` and hand them to the hub, as the transport does."""
        ticks = await self.publish(symbol, n)
        for x in ticks:
            self.hub.on_tick(x)
        return ticks

    def t(self, symbol: str, seq: int) -> EncodedTick:
        """A tick of `symbol` in its current epoch that the store did not keep (another
        replica's, or one that the transport delivers again)."""
        return tick(symbol, seq, epoch=self.store.epochs.get(symbol, ""))

    def epoch(self, symbol: str) -> str:
        return self.store.epochs[symbol]

    async def filled(self) -> None:
        """Wait until every gap fill in flight is done."""
        while self.hub.inbound._filling:
            await asyncio.wait_for(asyncio.gather(*self.hub.inbound._filling, return_exceptions=True), 1.0)

    def client(self, writable: bool = False, limits: Limits | None = None) -> Client:
        c = Client(self.hub, writable, limits)
        c.peer.frames.clear()  # the welcome is tested on its own
        c.conn.outbox.controls.clear()
        return c

    async def subscribe(
        self,
        c: Client,
        symbols: Sequence[str],
        throttle: int | None = 0,
        snapshot: bool = False,
        rid: int = 1,
        since: dict[str, Any] | None = None,
    ) -> None:
        request: dict[str, Any] = {
            "op": "subscribe",
            "id": rid,
            "symbols": list(symbols),
            "throttle_ms": throttle,
            "snapshot": snapshot,
        }
        if since is not None:
            request["since"] = since
        await self.hub.handle(c.conn, parse(request))

    async def unsubscribe(self, c: Client, symbols: Sequence[str], rid: int = 2) -> None:
        await self.hub.handle(c.conn, parse({"op": "unsubscribe", "id": rid, "symbols": list(symbols)}))

    def fire(self, throttle: int) -> None:
        self.hub.throttle.fire(self.hub.throttle.intervals[throttle])


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    r = Rig()
    await r.store.register(SYMBOLS)
    await r.hub.start()
    yield r
    await r.hub.stop()


# -- fan-out and throttles (ported from the hub before the core) ------------------------


async def test_unthrottled_ticks_reach_every_subscriber_once_in_order(rig: Rig) -> None:
    a, b = rig.client(), rig.client()
    await rig.subscribe(a, ["AAPL", "MSFT"])
    await rig.subscribe(b, ["AAPL"])
    assert rig.transport.joined == {"AAPL", "MSFT"} and rig.transport.joins == ["AAPL", "MSFT"], (
        "one membership per process"
    )
    for seq in (1, 2, 2, 3):
        rig.hub.on_tick(t("AAPL", seq))
    rig.hub.on_tick(t("MSFT", 1))
    rig.hub.on_tick(t("IBM", 1))
    assert a.pending() == [("AAPL", 1), ("AAPL", 2), ("AAPL", 3), ("MSFT", 1)]
    assert b.pending() == [("AAPL", 1), ("AAPL", 2), ("AAPL", 3)]


async def test_leaving_throttle_zero_counts_as_a_delivery_now(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.hub.on_tick(t("AAPL", 1))
    assert a.pending() == [("AAPL", 1)]
    await rig.subscribe(a, ["AAPL"], T)
    rig.hub.on_tick(t("AAPL", 2))
    rig.fire(T)
    assert a.pending() == []
    rig.clock.now += T / 1000
    rig.fire(T)
    assert a.pending() == [("AAPL", 2)]


async def test_moving_between_throttles_keeps_the_spacing(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T)
    rig.hub.on_tick(t("AAPL", 1))
    rig.fire(T)
    assert a.pending() == [("AAPL", 1)]
    await rig.subscribe(a, ["AAPL"], 2 * T)
    rig.hub.on_tick(t("AAPL", 2))
    rig.clock.now += T / 1000
    rig.fire(2 * T)
    assert a.pending() == [], "2T have not passed since the last delivery"
    rig.clock.now += T / 1000
    rig.fire(2 * T)
    assert a.pending() == [("AAPL", 2)]


async def test_subscribers_of_one_symbol_at_different_throttles(rig: Rig) -> None:
    fast, slow = rig.client(), rig.client()
    await rig.subscribe(fast, ["EUR/USD"], 0)
    await rig.subscribe(slow, ["EUR/USD"], T)
    for seq in (1, 2, 3):
        rig.hub.on_tick(t("EUR/USD", seq))
    rig.fire(T)
    assert fast.pending() == [("EUR/USD", 1), ("EUR/USD", 2), ("EUR/USD", 3)]
    assert slow.pending() == [("EUR/USD", 3)]
    assert rig.transport.joins == ["EUR/USD"]


async def test_resubscribe_changes_the_throttle_without_duplicates(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.hub.on_tick(t("AAPL", 1))
    await rig.subscribe(a, ["AAPL"], T)
    rig.hub.on_tick(t("AAPL", 2))
    rig.hub.on_tick(t("AAPL", 3))
    assert a.pending() == [("AAPL", 1)]
    rig.fire(T)
    await rig.subscribe(a, ["AAPL"], 0)
    rig.hub.on_tick(t("AAPL", 3))  # the transport delivers it again: the hub drops it
    rig.hub.on_tick(t("AAPL", 4))
    assert a.pending() == [("AAPL", 4)]
    assert rig.hub.stats.duplicates == 1
    assert a.conn.subscriptions == {"AAPL": 0}
    assert "AAPL" not in rig.hub.throttle.buckets, "the empty throttled bucket is gone"


async def test_resubscribe_at_the_same_throttle_changes_nothing(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T)
    bucket = rig.hub.throttle.buckets["AAPL"][T]
    rig.hub.on_tick(t("AAPL", 1))
    rig.fire(T)
    assert a.pending() == [("AAPL", 1)]
    await rig.subscribe(a, ["AAPL"], T, snapshot=True)
    assert rig.hub.throttle.buckets["AAPL"][T] is bucket and a.conn in bucket.subscribers, "still in step"
    assert [r["type"] for r in a.replies()] == ["ack"], "no snapshot for a symbol already subscribed"


async def test_remove_stops_delivery_and_leaves_when_last(rig: Rig) -> None:
    a, b = rig.client(), rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.subscribe(b, ["AAPL"], T)
    assert rig.hub.subscriptions.remove(a.conn, ["AAPL", "MSFT"]) == ["AAPL"]
    rig.hub.on_tick(t("AAPL", 1))
    assert a.pending() == []
    assert "AAPL" in rig.hub.membership.joined
    rig.hub.detach(b.conn)
    await settle()  # the leave runs as a task
    assert "AAPL" not in rig.hub.membership.joined
    assert rig.transport.joined == set() and rig.transport.leaves == ["AAPL"]
    assert rig.hub.fanout.routes == {} and rig.hub.throttle.buckets == {}


async def test_rejoin_after_leave(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.unsubscribe(a, ["AAPL"])
    await rig.subscribe(a, ["AAPL"], 0)
    await settle()
    assert "AAPL" in rig.hub.membership.joined and rig.transport.joined == {"AAPL"}
    rig.hub.on_tick(t("AAPL", 1))
    assert a.pending() == [("AAPL", 1)]


async def test_slow_connection_is_killed_with_1013(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    a.conn.busy_since = rig.clock.now  # its writer is stuck in a send
    rig.clock.now += rig.hub.fanout.slow_client_timeout + 1
    rig.hub.on_tick(t("AAPL", 1))
    await rig.hub.fanout._flush()
    assert [code for code, _ in a.peer.closes] == [1013]
    assert a.conn.closed
    assert rig.hub.stats.closes == {1013: 1}


async def test_a_malformed_message_is_dropped_and_the_next_tick_still_arrives(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.transport.push(MalformedMessage("tick message without a valid 'q'"))
    rig.transport.push(t("AAPL", 1))
    await settle(5)
    assert rig.hub.stats.bad_messages == 1
    assert a.conn.outbox.last_seq == {"AAPL": 1}, "the next tick reached the outbox at once, not after a pause"
    assert rig.hub.stats.transport_errors == 0 and rig.hub.alive


# -- connect, handle, detach ------------------------------------------------------------


async def test_connect_queues_the_welcome_and_sends_it(rig: Rig) -> None:
    limits = Limits(max_subscriptions=3, min_throttle_ms=20)
    c = Client(rig.hub, writable=False, limits=limits, session="abc")
    assert c.conn in rig.hub.connections and c.conn.limits is limits
    await settle()
    (welcome,) = c.peer.take()
    assert welcome == {
        "type": "welcome",
        "protocol": PROTOCOL_VERSION,
        "session": "abc",
        "encoding": "msgpack",
        "server_time": welcome["server_time"],
        "limits": limits.announced(),
    }
    assert PROTOCOL_VERSION == 1 and isinstance(welcome["server_time"], int) and welcome["server_time"] > 0


async def test_connect_uses_the_hubs_limits_by_default() -> None:
    limits = Limits(max_subscriptions=5)
    hub = Hub(MemoryStore(), FakeTransport(), limits)
    conn = hub.connect(CODEC["json"], Peer().send, Peer().closer)
    assert conn.limits is limits and conn.codec is CODEC["json"]


async def test_ping_and_list(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["msft", "AAPL"], 250)
    await rig.subscribe(a, ["EUR/USD"], 0)
    await settle()
    assert [r["type"] for r in a.replies()] == ["ack", "ack"]
    await rig.hub.handle(a.conn, Request("ping", "p"))
    await rig.hub.handle(a.conn, Request("list", 7))
    await settle()
    pong, listing = a.replies()
    assert pong["type"] == "pong" and pong["id"] == "p" and isinstance(pong["server_time"], int)
    assert listing == {
        "type": "subscriptions",
        "id": 7,
        "subscriptions": [
            {"symbol": "AAPL", "throttle_ms": 250, "bars": []},
            {"symbol": "EUR/USD", "throttle_ms": 0, "bars": []},
            {"symbol": "MSFT", "throttle_ms": 250, "bars": []},
        ],
    }


async def test_subscribe_acks_with_the_effective_throttle_and_the_rejected_symbols(rig: Rig) -> None:
    a = rig.client()
    await rig.hub.handle(
        a.conn, parse({"op": "subscribe", "id": 3, "symbols": ["aapl", "bad sym", "NOPE", "AAPL"], "throttle_ms": 101})
    )
    await settle()
    assert a.replies() == [
        {
            "type": "ack",
            "id": 3,
            "op": "subscribe",
            "symbols": ["AAPL"],
            "throttle_ms": 110,
            "rejected": {"bad sym": "bad_symbol", "NOPE": "unknown_symbol"},
            "epochs": {},
        }
    ]
    assert a.conn.subscriptions == {"AAPL": 110}
    assert rig.transport.joins == ["AAPL"], "an unknown symbol is never joined"


async def test_limit_exceeded_past_max_subscriptions() -> None:
    r = Rig(Limits(max_subscriptions=2))
    await r.store.register(SYMBOLS)
    a = r.client()
    await r.subscribe(a, ["AAPL", "MSFT", "EUR/USD"])
    await r.subscribe(a, ["AAPL", "IBM"], T)
    await settle()
    first, second = a.replies()
    assert (first["symbols"], first["rejected"]) == (["AAPL", "MSFT"], {"EUR/USD": "limit_exceeded"})
    assert (second["symbols"], second["rejected"]) == (["AAPL"], {"IBM": "limit_exceeded"}), (
        "a symbol already subscribed does not count again"
    )
    assert a.conn.subscriptions == {"AAPL": T, "MSFT": 0}
    await r.hub.stop()


async def test_a_symbol_the_connection_is_not_entitled_to_is_forbidden(rig: Rig) -> None:
    a = rig.client()
    a.conn.entitlement = Entitlement.parse("AAPL,EUR/*")
    await rig.subscribe(a, ["AAPL", "MSFT", "EUR/USD", "NOPE"])
    await settle()
    (ack,) = [r for r in a.replies() if r["type"] == "ack"]
    assert ack["symbols"] == ["AAPL", "EUR/USD"]
    assert ack["rejected"] == {"MSFT": "forbidden", "NOPE": "unknown_symbol"}, "unknown before forbidden"
    assert set(a.conn.subscriptions) == {"AAPL", "EUR/USD"} and "MSFT" not in rig.transport.joins
    other = Client(rig.hub, entitlement=Entitlement.parse("IBM"))
    assert other.conn.entitlement.patterns == ("IBM",), "hub.connect takes the connection's entitlement"
    assert rig.client().conn.entitlement.allows("ANY"), "by default every symbol"


async def test_the_limits_of_the_connection_decide_not_the_hubs(rig: Rig) -> None:
    a = rig.client(limits=Limits(max_subscriptions=1, min_throttle_ms=100))
    await rig.subscribe(a, ["AAPL", "MSFT"], 0)
    await settle()
    (ack,) = a.replies()
    assert (ack["symbols"], ack["throttle_ms"], ack["rejected"]) == (["AAPL"], 100, {"MSFT": "limit_exceeded"})


async def test_ack_then_snapshot_then_live_ticks(rig: Rig) -> None:
    await rig.publish("AAPL", 5)
    await rig.publish("EUR/USD", 2)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL", "MSFT", "EUR/USD"], 0, snapshot=True)
    await rig.feed("AAPL")
    await rig.feed("MSFT")
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ack", "snapshot", "ticks"]
    assert frames[0]["epochs"] == {"AAPL": rig.epoch("AAPL"), "EUR/USD": rig.epoch("EUR/USD")}, (
        "each symbol's epoch; MSFT has none before its first tick"
    )
    assert "recovered" not in frames[0], "only with since"
    assert [(x["symbol"], x["seq"]) for x in frames[1]["ticks"]] == [("AAPL", 5), ("EUR/USD", 2)], (
        "in request order; MSFT has no snapshot"
    )
    assert [(x["symbol"], x["seq"]) for x in frames[2]["ticks"]] == [("AAPL", 6), ("MSFT", 1)]


async def test_no_snapshot_when_not_asked(rig: Rig) -> None:
    await rig.publish("AAPL", 5)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, snapshot=False)
    await settle()
    assert a.peer.types() == ["ack"]


async def test_snapshot_race_a_tick_during_the_join_is_not_sent_twice(rig: Rig) -> None:
    """Join first, snapshot second, filter by seq: a tick published while the hub joins
    is both in the store and in the outbox; the client gets it once, in the snapshot."""
    await rig.feed("AAPL", 5)
    a = rig.client(writable=True)

    async def published_meanwhile(symbol: str) -> None:
        await rig.feed(symbol)  # 6, kept first, then delivered: this hub's route is already there

    rig.transport.on_join = published_meanwhile
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(rig.t("AAPL", 6))  # a duplicate delivery by the transport
    await rig.feed("AAPL")
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ack", "snapshot", "ticks"]
    assert [x["seq"] for x in frames[1]["ticks"]] == [6]
    assert [x["seq"] for x in frames[2]["ticks"]] == [7]


async def test_snapshot_race_a_tick_newer_than_the_stored_snapshot(rig: Rig) -> None:
    """A tick that arrives before the snapshot read and is newer than what the read
    returns (another store replica, say) becomes the snapshot; the stale one is not sent."""
    await rig.feed("AAPL", 5)
    a = rig.client(writable=True)
    real = rig.store.snapshots

    async def snapshots(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        found = await real(symbols)
        rig.hub.on_tick(rig.t("AAPL", 6))
        rig.hub.on_tick(rig.t("AAPL", 7))
        return found

    rig.store.snapshots = snapshots  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(rig.t("AAPL", 8))
    await settle()
    seqs = [(f["type"], [x["seq"] for x in f.get("ticks", [])]) for f in a.peer.take()]
    assert seqs == [("ack", []), ("snapshot", [7]), ("ticks", [8])]


async def test_a_throttled_snapshot_counts_as_the_last_delivery(rig: Rig) -> None:
    await rig.publish("AAPL", 5)
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T, snapshot=True)
    assert a.conn.sent_at == {"AAPL": rig.clock.now}
    await rig.feed("AAPL")
    rig.fire(T)
    assert a.pending() == [], "not a throttle interval after the snapshot"
    rig.clock.now += T / 1000
    rig.fire(T)
    assert a.pending() == [("AAPL", 6)]


async def test_an_interval_end_during_a_throttled_subscribe_does_not_shorten_the_throttle(rig: Rig) -> None:
    """Subscriptions._queue_snapshot: 'the snapshot counts as the symbol's last delivery', so the next
    tick comes a throttle interval after the snapshot at the earliest, even when an interval
    ended while the subscribe waited for the store (and admitted the connection then)."""
    await rig.publish("AAPL", 5)
    a = rig.client()
    real = rig.store.snapshots

    async def snapshots(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        await rig.feed("AAPL")  # 6
        rig.fire(T)  # an interval ends while the snapshot is read...
        rig.clock.now += 3  # ...and the read takes a while
        return await real(symbols)

    rig.store.snapshots = snapshots  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], T, snapshot=True)
    snapshot_at = rig.clock.now
    await settle()
    assert [(f["type"], [x["seq"] for x in f.get("ticks", [])]) for f in a.peer.take()] == [
        ("ack", []),
        ("snapshot", [6]),
    ]
    rig.clock.now += T / 1000 - 3  # the next end of the interval: 7 s after the snapshot
    await rig.feed("AAPL")  # 7
    rig.fire(T)
    assert rig.clock.now - snapshot_at < T / 1000
    assert a.pending() == [], "less than throttle_ms after the snapshot"
    rig.clock.now += T / 1000
    rig.fire(T)
    assert a.pending() == [("AAPL", 7)]


async def test_a_failed_snapshot_read_still_subscribes(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.publish("AAPL", 5)
    a = rig.client(writable=True)

    async def broken(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        raise ConnectionError("store down")

    rig.store.snapshots = broken  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    await rig.feed("AAPL")
    await settle()
    assert a.peer.types() == ["ack", "ticks"]
    assert "snapshot read failed" in caplog.text


async def test_ticks_wait_behind_the_ack_while_the_subscribe_is_handled(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["MSFT"], 0)
    gate = asyncio.Event()

    async def slow(symbol: str) -> None:
        rig.hub.on_tick(t("MSFT", 1))  # a tick of a symbol already subscribed, meanwhile
        await gate.wait()

    rig.transport.on_join = slow
    task = asyncio.create_task(rig.subscribe(a, ["AAPL"], 0, rid=9))
    await settle()
    assert a.peer.types() == ["ack"], "only the first ack: the tick waits behind the second"
    gate.set()
    await task
    await settle()
    frames = a.peer.take()
    assert [(f["type"], f.get("id")) for f in frames] == [("ack", 1), ("ack", 9), ("ticks", None)]


async def test_two_connections_joining_one_symbol_join_it_once(rig: Rig) -> None:
    a, b = rig.client(writable=True), rig.client(writable=True)
    gate = asyncio.Event()

    async def slow(symbol: str) -> None:
        await gate.wait()

    rig.transport.on_join = slow
    first = asyncio.create_task(rig.subscribe(a, ["AAPL"]))
    second = asyncio.create_task(rig.subscribe(b, ["AAPL"]))
    await settle()
    assert a.peer.frames == [] and b.peer.frames == [], "no ack before this process receives the symbol"
    gate.set()
    await asyncio.gather(first, second)
    assert rig.transport.joins == ["AAPL"]


async def test_unsubscribe_acks_and_no_tick_follows(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL", "MSFT"], 0)
    await rig.subscribe(a, ["EUR/USD"], T)
    await settle()
    a.peer.take()
    rig.hub.on_tick(t("AAPL", 1))  # in the outbox, not sent yet
    rig.hub.on_tick(t("EUR/USD", 1))
    await rig.hub.handle(a.conn, parse({"op": "unsubscribe", "id": 4, "symbols": ["aapl", "eur/usd", "IBM", "?"]}))
    rig.hub.on_tick(t("AAPL", 2))
    rig.fire(T)
    rig.hub.on_tick(t("MSFT", 1))
    await settle()
    frames = a.peer.take()
    assert frames[0] == {
        "type": "ack",
        "id": 4,
        "op": "unsubscribe",
        "symbols": ["AAPL", "EUR/USD", "IBM"],
        "rejected": {"?": "bad_symbol"},
    }
    assert [(x["symbol"], x["seq"]) for f in frames[1:] for x in f["ticks"]] == [("MSFT", 1)]
    assert a.conn.subscriptions == {"MSFT": 0} and a.conn.sent_at == {}


async def test_a_failed_join_leaves_the_connection_as_it_was(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0)
    await settle()
    a.peer.take()

    async def tick_meanwhile(symbol: str) -> None:
        rig.hub.on_tick(t(symbol, 1))  # routed already: it reaches the outbox

    rig.transport.on_join = tick_meanwhile
    rig.transport.fail_join = {"MSFT"}
    with pytest.raises(ConnectionError):
        await rig.subscribe(a, ["MSFT", "EUR/USD"], 0, snapshot=True)
    await settle()
    assert a.conn.subscriptions == {"AAPL": 0}
    assert set(rig.hub.fanout.routes) == {"AAPL"} and rig.hub.throttle.buckets == {}
    assert rig.hub.membership.joined == {"AAPL"}
    assert a.peer.frames == [] and not a.conn.outbox, "no ack, and the tick that came meanwhile is dropped"
    rig.transport.fail_join = set()
    await rig.subscribe(a, ["MSFT"], 0)
    assert a.conn.subscriptions == {"AAPL": 0, "MSFT": 0}


async def test_a_failed_join_leaves_a_throttle_change_undone(rig: Rig) -> None:
    """handle(): 'Raises when the store or the transport fails; the connection is then as
    it was before the request.' That includes the throttle of a symbol already subscribed."""
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.transport.fail_join = {"MSFT"}
    with pytest.raises(ConnectionError):
        await rig.subscribe(a, ["AAPL", "MSFT"], T)
    assert a.conn.subscriptions == {"AAPL": 0}, "the request failed: AAPL keeps its throttle"
    rig.hub.on_tick(t("AAPL", 1))
    assert a.pending() == [("AAPL", 1)], "and still gets every tick"


async def test_a_failed_catalog_read_changes_nothing(rig: Rig) -> None:
    a = rig.client()

    async def broken(symbols: Sequence[str]) -> list[bool]:
        raise ConnectionError("store down")

    rig.store.known = broken  # type: ignore[method-assign]
    with pytest.raises(ConnectionError):
        await rig.subscribe(a, ["AAPL"])
    assert a.conn.subscriptions == {} and rig.transport.joins == []


async def test_a_join_that_hangs_times_out_and_is_undone(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions_module, "STORE_TIMEOUT", 0.05)
    a = rig.client()

    async def hang(symbol: str) -> None:
        await asyncio.Event().wait()

    rig.transport.on_join = hang
    with pytest.raises(TimeoutError):
        await rig.subscribe(a, ["AAPL"])
    assert a.conn.subscriptions == {} and rig.hub.fanout.routes == {}


async def test_detach_forgets_the_connection_and_keeps_its_counts(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.subscribe(a, ["MSFT"], T)
    rig.hub.on_tick(t("AAPL", 1))
    await settle()
    frames, ticks = a.conn.frames, a.conn.ticks_sent
    assert (frames, ticks) == (3, 1)
    a.peer.take()
    rig.hub.detach(a.conn)
    rig.hub.detach(a.conn)
    assert a.conn not in rig.hub.connections and a.conn.close_code == Close.GOING_AWAY
    assert a.peer.closes == [], "the peer is gone: the closer is not called"
    assert (rig.hub.stats.frames_closed, rig.hub.stats.ticks_sent_closed) == (3, 1), "counted once"
    assert rig.hub.fanout.routes == {} and rig.hub.throttle.buckets == {}
    rig.hub.on_tick(t("AAPL", 2))
    await settle()
    assert a.peer.frames == [] and rig.transport.joined == set()


async def test_routed(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.subscribe(a, ["MSFT"], T)
    assert rig.hub.routed("AAPL") and rig.hub.routed("MSFT") and not rig.hub.routed("IBM")


# -- lifecycle and the receive loop ---------------------------------------------------


async def test_start_is_idempotent_and_stop_ends_the_receiver() -> None:
    transport = FakeTransport()
    hub = Hub(MemoryStore(), transport)
    assert not hub.started and not hub.alive
    await asyncio.gather(hub.start(), hub.start())
    await hub.start()
    assert transport.opened == 1 and hub.started and hub.alive
    await hub.stop()
    assert not hub.started and not hub.alive


async def test_start_raises_when_the_transport_cannot_be_opened_and_may_be_retried() -> None:
    transport = FakeTransport()
    transport.fail_open = ConnectionError("no Redis")
    hub = Hub(MemoryStore(), transport)
    with pytest.raises(ConnectionError):
        await hub.start()
    assert not hub.started
    transport.fail_open = None
    await hub.start()
    assert hub.alive
    await hub.stop()


async def test_received_ticks_reach_the_subscribers(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.clock.now = 123.0
    rig.transport.push(t("AAPL", 1))
    rig.transport.push(t("MSFT", 1))
    await settle()
    assert a.pending() == [("AAPL", 1)]
    assert rig.hub.stats.ticks_received == 2 and rig.hub.stats.last_message == 123.0


async def test_the_receiver_retries_after_a_transport_error(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(hub_module, "RETRY_DELAY", 0.01)
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    rig.transport.push(ConnectionError("Redis went away"))
    rig.transport.push(t("AAPL", 1))
    await settle()
    assert rig.hub.stats.transport_errors == 1
    assert a.pending() == [], "it waits RETRY_DELAY first"
    await asyncio.sleep(0.05)
    assert a.pending() == [("AAPL", 1)]
    assert rig.hub.alive


async def test_a_failing_delivery_does_not_stop_the_receiver(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    real = rig.hub.fanout.deliver
    failures = [RuntimeError("boom")]

    def deliver(tick: EncodedTick) -> None:
        if failures:
            raise failures.pop()
        real(tick)

    rig.hub.fanout.deliver = deliver  # type: ignore[method-assign]
    rig.transport.push(t("AAPL", 1))
    rig.transport.push(t("AAPL", 2))
    await settle()
    assert a.pending() == [("AAPL", 2)] and rig.hub.alive


async def test_stop_cancels_every_task(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T)
    task = rig.hub.throttle.intervals[T].task
    assert task is not None
    await rig.hub.stop()
    await settle()
    assert task.cancelled()


def test_hub_constants() -> None:
    assert subscriptions_module.STORE_TIMEOUT > 0 and hub_module.RETRY_DELAY > 0


# -- recovery with since --------------------------------------------------------------------


def shape(frames: list[dict[str, Any]]) -> list[tuple[str, list[int]]]:
    """Each frame's type and the seqs of its ticks (`ticks`, `snapshot`)."""
    return [(f["type"], [x["seq"] for x in f.get("ticks", [])]) for f in frames]


def conflated(frames: list[dict[str, Any]]) -> list[tuple[int, int]]:
    """(seq, conflated) of every tick of the frames, in order."""
    return [(x["seq"], x.get("conflated", 0)) for f in frames for x in f.get("ticks", [])]


def unaccounted(seen: list[tuple[int, int]]) -> list[tuple[int, int, int]]:
    """The deliveries (previous seq, seq, conflated) where `seq - previous - 1 - conflated`
    is not 0: ticks lost (PROTOCOL.md), or miscounted."""
    return [(a, b, c) for (a, _), (b, c) in itertools.pairwise(seen) if b - a - 1 - c != 0]


async def test_since_recovers_the_missed_ticks_before_the_live_ones(rig: Rig) -> None:
    stored = (await rig.publish("AAPL", 10))[6:]
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, since={"AAPL": 6})
    await rig.feed("AAPL")
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("ticks", [7, 8, 9, 10]), ("ticks", [11])]
    ack = frames[0]
    assert ack["epochs"] == {"AAPL": rig.epoch("AAPL")} and ack["recovered"] == {"AAPL": True}
    assert rig.hub.history.stats.served == 1 and rig.hub.history.stats.ticks == 4
    assert frames[1]["ticks"] == [x.decode() for x in stored], "the stored ticks"


async def test_many_recovered_ticks_come_in_several_frames(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(subscriptions_module, "FRAME_TICKS", 3)
    await rig.publish("AAPL", 10)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, since={"AAPL": 2})
    await settle()
    assert shape(a.peer.take()) == [("ack", []), ("ticks", [3, 4, 5]), ("ticks", [6, 7, 8]), ("ticks", [9, 10])]


async def test_since_with_the_epoch(rig: Rig) -> None:
    await rig.publish("AAPL", 3)
    await rig.publish("MSFT", 2)
    a = rig.client(writable=True)
    since = {"AAPL": {"seq": 1, "epoch": rig.epoch("AAPL")}, "MSFT": 2}
    await rig.subscribe(a, ["AAPL", "MSFT", "IBM"], 0, since=since)
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("ticks", [2, 3])], "MSFT: nothing missed, nothing sent"
    assert frames[0]["recovered"] == {"AAPL": True, "MSFT": True}, "IBM had no since"
    assert frames[0]["epochs"] == {"AAPL": rig.epoch("AAPL"), "MSFT": rig.epoch("MSFT")}


async def test_recovered_ticks_come_before_the_snapshot_of_other_symbols(rig: Rig) -> None:
    await rig.publish("AAPL", 4)
    await rig.publish("MSFT", 2)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL", "MSFT"], 0, snapshot=True, since={"AAPL": 2})
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("ticks", [3, 4]), ("snapshot", [2])]
    assert frames[2]["ticks"][0]["symbol"] == "MSFT"


async def test_one_history_read_serves_a_reconnect_storm(rig: Rig) -> None:
    await rig.publish("AAPL", 5)
    await rig.publish("MSFT", 5)
    calls: list[list[str]] = []
    real = rig.store.tails

    async def tails(after: Mapping[str, int], limit: int) -> dict[str, History]:
        calls.append(sorted(after))
        return await real(after, limit)

    rig.store.tails = tails  # type: ignore[method-assign]
    clients = [rig.client(writable=True) for _ in range(20)]
    await asyncio.gather(*(rig.subscribe(c, ["AAPL", "MSFT"], 0, since={"AAPL": 3, "MSFT": 4}) for c in clients))
    await settle()
    assert calls == [["AAPL", "MSFT"]], "one store round trip for every client and symbol"
    for c in clients:
        assert shape(c.peer.take()) == [("ack", []), ("ticks", [4, 5]), ("ticks", [5])]


@pytest.mark.parametrize(
    ("case", "since"),
    [
        ("an epoch that is not the current one", {"seq": 6, "epoch": "0ld3p0ch"}),
        ("since ahead of the symbol's seq", 11),
        ("history does not reach back", 2),
        ("more than max_recovery missing", 4),
    ],
)
async def test_each_refused_recovery_sends_a_snapshot_even_without_snapshot(case: str, since: Any) -> None:
    r = Rig(Limits(max_recovery=5), history_length=7)
    await r.store.register(SYMBOLS)
    await r.hub.start()
    await r.publish("AAPL", 10)  # history holds 4..10
    a = r.client(writable=True)
    await r.subscribe(a, ["AAPL"], 0, snapshot=False, since={"AAPL": since})
    await r.feed("AAPL")
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("snapshot", [10]), ("ticks", [11])], case
    assert frames[0]["recovered"] == {"AAPL": False} and frames[0]["epochs"] == {"AAPL": r.epoch("AAPL")}
    assert r.hub.history.stats.refused == 1 and r.hub.history.stats.served == 0
    await r.hub.stop()


async def test_the_connections_max_recovery_decides(rig: Rig) -> None:
    await rig.publish("AAPL", 10)
    a = rig.client(writable=True, limits=Limits(max_recovery=2))
    await rig.subscribe(a, ["AAPL"], 0, since={"AAPL": 7})
    b = rig.client(writable=True, limits=Limits(max_recovery=3))
    await rig.subscribe(b, ["AAPL"], 0, since={"AAPL": 7})
    await settle()
    assert shape(a.peer.take()) == [("ack", []), ("snapshot", [10])]
    assert shape(b.peer.take()) == [("ack", []), ("ticks", [8, 9, 10])]


async def test_a_failed_history_read_refuses_recovery_with_a_snapshot(
    rig: Rig, caplog: pytest.LogCaptureFixture
) -> None:
    await rig.publish("AAPL", 10)

    async def broken(after: Mapping[str, int], limit: int) -> dict[str, History]:
        raise ConnectionError("store down")

    rig.store.tails = broken  # type: ignore[method-assign]
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, since={"AAPL": 8})
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("snapshot", [10])]
    assert frames[0]["recovered"] == {"AAPL": False}
    assert "history read failed" in caplog.text


async def test_a_refused_recovery_of_a_symbol_without_ticks_sends_nothing_more(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL", "MSFT"], 0, since={"AAPL": 0, "MSFT": 3})
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", [])], "no tick, no snapshot to send"
    assert frames[0]["recovered"] == {"AAPL": True, "MSFT": False}
    assert "MSFT" not in frames[0]["epochs"]


async def test_a_throttled_recovery_is_one_tick_with_conflated(rig: Rig) -> None:
    await rig.publish("AAPL", 10)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], T, since={"AAPL": 6})
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("ticks", [10])]
    assert frames[0]["recovered"] == {"AAPL": True}
    assert conflated(frames) == [(10, 3)], "10 stands in for 7, 8, 9"
    assert a.conn.sent_at == {"AAPL": rig.clock.now}, "the recovery counts as the last delivery"
    await rig.feed("AAPL", 2)
    rig.fire(T)
    await settle()
    assert a.peer.take() == [], "not a throttle interval after the recovery"
    rig.clock.now += T / 1000
    rig.fire(T)
    await settle()
    assert conflated(a.peer.take()) == [(12, 1)]


async def test_since_for_a_symbol_already_subscribed_is_ignored(rig: Rig) -> None:
    await rig.publish("AAPL", 10)
    await rig.publish("MSFT", 4)
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0)
    await settle()
    a.peer.take()
    await rig.subscribe(a, ["AAPL"], 0, since={"AAPL": 2}, rid=2)
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", [])] and "recovered" not in frames[0]
    await rig.subscribe(a, ["AAPL", "MSFT"], 0, since={"AAPL": 2, "MSFT": 2}, rid=3)
    await settle()
    frames = a.peer.take()
    assert shape(frames) == [("ack", []), ("ticks", [3, 4])]
    assert frames[0]["recovered"] == {"MSFT": True}, "only the new symbol"
    assert [x["symbol"] for x in frames[1]["ticks"]] == ["MSFT", "MSFT"]


@pytest.mark.parametrize("throttle", [0, T])
async def test_live_ticks_during_the_history_read_are_neither_lost_nor_duplicated(rig: Rig, throttle: int) -> None:
    """Ticks kept and delivered live before the read (in both), and ticks delivered live
    after the read answered but before the hub resumes (newer than history)."""
    await rig.publish("AAPL", 10)
    real = rig.store.tails

    async def tails(after: Mapping[str, int], limit: int) -> dict[str, History]:
        await rig.feed("AAPL", 2)  # 11, 12: in history and in the outbox
        found = await real(after, limit)
        await rig.feed("AAPL", 2)  # 13, 14: live only
        return found

    rig.store.tails = tails  # type: ignore[method-assign]
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], throttle, since={"AAPL": 6})
    await rig.feed("AAPL")  # 15
    rig.clock.now += 2 * T / 1000
    if throttle:
        rig.fire(throttle)
    await settle()
    frames = a.peer.take()
    assert frames[0]["type"] == "ack" and frames[0]["recovered"] == {"AAPL": True}
    seen = conflated(frames)
    if throttle:
        assert seen == [(12, 5), (15, 2)], "12 for 7..11, then 15 for 13, 14"
    else:
        assert seen == [(s, 0) for s in range(7, 16)], "each seq once, in order"


async def test_a_throttled_recovery_counts_the_live_ticks_merged_during_the_read(rig: Rig) -> None:
    """An interval ends while the history is read: the bucket puts its newest tick (14)
    into the outbox; it is newer than what the read returned (12), and 13, which the
    bucket merged, never reached the outbox. The recovered tick must count it."""
    await rig.publish("AAPL", 10)
    real = rig.store.tails

    async def tails(after: Mapping[str, int], limit: int) -> dict[str, History]:
        found = await real(after, limit)
        await rig.feed("AAPL", 4)  # 11..14 arrive live after the read answered
        rig.fire(T)  # an interval ends: the new subscriber is due at once
        return found

    rig.store.tails = tails  # type: ignore[method-assign]
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], T, since={"AAPL": 6})
    await settle()
    frames = a.peer.take()
    assert frames[0]["recovered"] == {"AAPL": True}
    assert conflated(frames) == [(14, 7)], "14 stands in for 7..13"


# -- reset: a symbol's seq restarted ------------------------------------------------------------


async def test_a_reset_reaches_every_subscriber_and_their_seq_restarts(rig: Rig) -> None:
    fast, slow, other = rig.client(writable=True), rig.client(writable=True), rig.client(writable=True)
    await rig.subscribe(fast, ["AAPL"], 0)
    await rig.subscribe(slow, ["AAPL"], T)
    await rig.subscribe(other, ["MSFT"], 0)
    await settle()
    for c in (fast, slow, other):
        c.peer.take()
    await rig.feed("AAPL", 5)
    rig.fire(T)
    await settle()
    assert conflated(fast.peer.take()) == [(s, 0) for s in range(1, 6)]
    assert conflated(slow.peer.take()) == [(5, 0)]
    await rig.feed("AAPL")  # 6: in fast's outbox, not sent yet, and pending in the bucket
    assert [x.seq for x in fast.conn.outbox.ticks] == [6] and rig.hub.throttle.buckets["AAPL"][T].pending
    rig.store.forget("AAPL")
    new = await rig.feed("AAPL", 2)
    rig.clock.now += T / 1000
    rig.fire(T)
    await settle()
    epoch = new[0].epoch
    reset = {"type": "reset", "symbol": "AAPL", "epoch": epoch}
    frames = fast.peer.take()
    assert frames[0] == reset and conflated(frames[1:]) == [(1, 0), (2, 0)], "6 of the old epoch is dropped"
    frames = slow.peer.take()
    assert frames[0] == reset and conflated(frames[1:]) == [(2, 0)], "the bucket's 6 is dropped; 2 starts afresh"
    assert other.peer.take() == []
    assert fast.conn.outbox.last_seq == {"AAPL": 2} and slow.conn.outbox.last_seq == {"AAPL": 2}
    assert rig.hub.stats.resets == 1


async def test_after_a_reset_throttled_counts_start_again(rig: Rig) -> None:
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], T)
    await settle()
    a.peer.take()
    await rig.feed("AAPL", 3)
    rig.fire(T)
    await settle()
    rig.store.forget("AAPL")
    await rig.feed("AAPL", 1)
    rig.clock.now += T / 1000
    rig.fire(T)
    await settle()
    await rig.feed("AAPL", 3)
    rig.clock.now += T / 1000
    rig.fire(T)
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ticks", "reset", "ticks", "ticks"]
    assert conflated(frames) == [(3, 0), (1, 0), (4, 2)]


@pytest.mark.parametrize("throttle", [0, T])
async def test_a_new_epoch_before_the_hubs_first_tick_resets_a_new_subscriber(rig: Rig, throttle: int) -> None:
    """The store loses a symbol's seq after a subscribe read its snapshot and before the
    hub's first live tick of it (the browser test's race): the ack gave the old epoch, so
    the new one's ticks come after a `reset`, not as if they continued the old one."""
    await rig.publish("AAPL", 5)
    old = rig.epoch("AAPL")
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], throttle, snapshot=True)
    await settle()
    rig.store.forget("AAPL")
    new = await rig.feed("AAPL", 2)
    if throttle:
        rig.clock.now += throttle / 1000
        rig.fire(throttle)
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames[:3]] == ["ack", "snapshot", "reset"]
    assert frames[0]["epochs"] == {"AAPL": old} and frames[2]["epoch"] == new[0].epoch != old
    assert conflated(frames)[0] == (5, 0) and conflated(frames)[-1][0] == 2, "the snapshot, then the new epoch"
    assert a.conn.outbox.last_seq == {"AAPL": 2} and rig.hub.stats.resets == 1


async def test_a_new_epoch_received_during_a_subscribe_resets_the_new_subscriber(rig: Rig) -> None:
    """The hub's first ticks of a symbol are of a new epoch and arrive while a subscribe
    reads the old one's snapshot: the ack and the snapshot say the old epoch, then `reset`
    to the live one, then its ticks (those merged into the snapshot are not sent again)."""
    await rig.publish("AAPL", 5)
    old = rig.epoch("AAPL")
    a = rig.client(writable=True)
    real = rig.store.snapshots
    new: list[EncodedTick] = []

    async def snapshots(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        found = await real(symbols)  # seq 5 of the old epoch
        rig.store.forget("AAPL")
        new.extend(await rig.feed("AAPL", 2))  # the hub's first ticks of AAPL: 1 and 2 of the new
        return found

    rig.store.snapshots = snapshots  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    await rig.feed("AAPL")
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ack", "snapshot", "reset", "ticks"]
    assert frames[0]["epochs"] == {"AAPL": old} and frames[2]["epoch"] == new[0].epoch != old
    assert conflated(frames) == [(5, 0), (3, 0)]
    assert rig.hub.stats.resets == 0, "the hub's own epoch never changed: only the new subscriber was behind"


async def test_a_second_subscriber_told_the_new_epoch_before_its_first_tick(rig: Rig) -> None:
    """One subscriber was told the old epoch, the next (after the loss) the new one; no
    tick came in between. The first tick resets both to the new epoch: the second was
    reset to the old one first (the live epoch then), so both account for every seq."""
    await rig.publish("AAPL", 5)
    old = rig.epoch("AAPL")
    a, b = rig.client(writable=True), rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.store.forget("AAPL")
    await rig.publish("AAPL")  # 1 of the new epoch: in the store, not yet at the hub
    new = rig.epoch("AAPL")
    await rig.subscribe(b, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(rig.t("AAPL", 1))
    await settle()

    def kinds(frames: list[dict[str, Any]]) -> list[str]:
        return [f"{f['type']} {f['epoch']}" if f["type"] == "reset" else f["type"] for f in frames]

    frames = a.peer.take()
    assert kinds(frames) == ["ack", "snapshot", f"reset {new}", "ticks"]
    frames = b.peer.take()
    assert frames[0]["epochs"] == {"AAPL": new}
    assert kinds(frames) == ["ack", "snapshot", f"reset {old}", f"reset {new}", "ticks"]
    assert conflated(frames) == [(1, 0), (1, 0)], "b's snapshot is 1 of the new epoch, then 1 again after the resets"


# -- accounted conflation through the hub ------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
async def test_deliveries_account_for_every_seq(rig: Rig, seed: int) -> None:
    """seq - previous_seq - 1 - conflated == 0 (nothing lost before the hub) for throttled
    subscribers, across intervals and a snapshot start, and for a slow unthrottled one
    whose outbox conflates."""
    rng = random.Random(seed)
    rig.hub.fanout.slow_client_timeout = 1e9  # slow, never closed
    await rig.feed("AAPL", rng.randint(1, 5))
    a = rig.client(writable=True)
    b = rig.client(writable=True)
    slow = rig.client(writable=True, limits=Limits(max_pending=2))
    await rig.subscribe(a, ["AAPL", "MSFT"], T, snapshot=True)
    await rig.subscribe(b, ["AAPL"], 2 * T, snapshot=False)
    await rig.subscribe(slow, ["AAPL", "MSFT"], 0, snapshot=True)
    conflations = 0
    for _ in range(60):
        step = rng.random()
        if step < 0.5:
            await rig.feed(rng.choice(["AAPL", "MSFT"]), rng.randint(1, 4))
        elif step < 0.8:
            rig.clock.now += T / 1000
            rig.fire(T)
            if 2 * T in rig.hub.throttle.intervals:
                rig.fire(2 * T)
        else:
            slow.peer.is_writable = rng.random() < 0.5  # a slow reader, now and then
            slow.conn.wake()
            await settle(3)
        conflations = max(conflations, slow.conn.outbox.conflations)
    slow.peer.is_writable = True
    slow.conn.wake()
    await settle()
    merged: dict[str, int] = {}
    for name, c in (("a", a), ("b", b), ("slow", slow)):
        frames = [f for f in c.peer.take() if f["type"] in ("snapshot", "ticks")]
        for symbol in ("AAPL", "MSFT"):
            seen = [(x["seq"], x.get("conflated", 0)) for f in frames for x in f["ticks"] if x["symbol"] == symbol]
            assert unaccounted(seen) == [], (name, symbol, seen)
            merged[name] = merged.get(name, 0) + sum(n for _, n in seen)
    assert merged["a"] > 0 and merged["b"] > 0, "the throttles conflate"
    assert merged["slow"] > 0 and conflations > 0, "the slow reader's outbox conflates"
    assert rig.hub.stats.ticks_lost == 0


async def test_leaving_a_throttle_accounts_for_the_ticks_the_bucket_merged(rig: Rig) -> None:
    """A throttled subscriber moves to throttle 0 while its bucket holds ticks it never got:
    its next tick must count them, or the client sees a loss where there was none."""
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T)
    await rig.feed("AAPL")
    rig.fire(T)
    assert [(x.seq, x.conflated) for x in a.conn.outbox.take_ticks()] == [(1, 0)]
    await rig.feed("AAPL", 2)  # 2, 3: merged in the bucket, not delivered yet
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.feed("AAPL")  # 4
    assert [(x.seq, x.conflated) for x in a.conn.outbox.take_ticks()] == [(4, 2)], "4 stands in for 2, 3"


async def test_a_gap_in_what_the_hub_receives_is_filled_for_its_subscribers(rig: Rig) -> None:
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], 0)
    await rig.feed("AAPL", 2)
    await rig.publish("AAPL", 2)  # 3, 4: lost on the way to this hub
    await rig.feed("AAPL")  # 5
    assert a.pending() == [("AAPL", 1), ("AAPL", 2)], "5 waits for the fill"
    await rig.filled()
    assert a.pending() == [("AAPL", 3), ("AAPL", 4), ("AAPL", 5)]
    assert rig.hub.stats.ticks_filled == 2


async def test_ticks_lost_before_the_hub_are_not_counted_as_conflated() -> None:
    r = Rig(history_length=4)
    await r.store.register(SYMBOLS)
    await r.hub.start()
    a = r.client()
    await r.subscribe(a, ["AAPL"], T)
    await r.feed("AAPL")
    r.fire(T)
    assert [(x.seq, x.conflated) for x in a.conn.outbox.take_ticks()] == [(1, 0)]
    await r.feed("AAPL")  # 2: merged in the bucket
    await r.publish("AAPL", 4)  # 3..6 never reach the hub
    await r.feed("AAPL", 2)  # 7, 8; history keeps 5..8 only
    await r.filled()
    assert r.hub.stats.ticks_lost == 2 and r.hub.stats.ticks_filled == 2
    r.clock.now += T / 1000
    r.fire(T)
    (x,) = a.conn.outbox.take_ticks()
    assert (x.seq, x.conflated) == (8, 4), "8 stands in for 2, 5, 6, 7; 3 and 4 were lost"
    assert x.seq - 1 - 1 - x.conflated == r.hub.losses.between("AAPL", 1, 8) == 2
    await r.hub.stop()
