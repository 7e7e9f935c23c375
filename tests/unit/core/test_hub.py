"""The hub with a fake tick transport and a fake clock (no I/O): subscribe, unsubscribe,
the snapshot race, throttle changes, limits, failures, and the receive loop."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from marketstream.core import hub as hub_module
from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.hub import PROTOCOL_VERSION, Hub
from marketstream.core.limits import Limits
from marketstream.core.requests import Request, parse
from marketstream.core.store import MemoryStore
from marketstream.core.tick import EncodedTick
from marketstream.core.transport import MalformedMessage
from tests.unit.core.fakes import Clock, FakeTransport, Peer, settle, tick

T = 10_000  # ms: long enough that the real interval task never fires during a test
SYMBOLS = ["AAPL", "MSFT", "EUR/USD", "IBM"]


def t(symbol: str, seq: int) -> EncodedTick:
    return tick(symbol, seq)


class Client:
    """A connection of the hub and the peer at its other end."""

    def __init__(self, hub: Hub, writable: bool = False, limits: Limits | None = None, session: str = "") -> None:
        self.peer = Peer(writable)
        self.conn = hub.connect(CODEC["msgpack"], self.peer.send, self.peer.closer, self.peer.writable, session, limits)

    def pending(self) -> list[tuple[str, int]]:
        """(symbol, seq) of every tick delivered since the last call: sent, or still in the outbox."""
        sent = self.peer.ticks()
        return sent + [(x.symbol, x.seq) for x in self.conn.outbox.take_ticks()]

    def replies(self) -> list[dict[str, Any]]:
        """The frames other than ticks sent since the last call (welcome, acks, snapshots...)."""
        return [f for f in self.peer.take() if f["type"] != "ticks"]


class Rig:
    def __init__(self, limits: Limits | None = None) -> None:
        self.clock = Clock()
        self.store = MemoryStore()
        self.transport = FakeTransport(self.store)
        self.hub = Hub(self.store, self.transport, limits, clock=self.clock)

    def client(self, writable: bool = False, limits: Limits | None = None) -> Client:
        c = Client(self.hub, writable, limits)
        c.peer.frames.clear()  # the welcome is tested on its own
        c.conn.outbox.controls.clear()
        return c

    async def subscribe(
        self, c: Client, symbols: Sequence[str], throttle: int | None = 0, snapshot: bool = False, rid: int = 1
    ) -> None:
        request = {
            "op": "subscribe",
            "id": rid,
            "symbols": list(symbols),
            "throttle_ms": throttle,
            "snapshot": snapshot,
        }
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
    rig.hub.on_tick(t("AAPL", 3))
    rig.hub.on_tick(t("AAPL", 4))
    assert a.pending() == [("AAPL", 3), ("AAPL", 4)]
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
    assert rig.hub._remove(a.conn, ["AAPL", "MSFT"]) == ["AAPL"]
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
            {"symbol": "AAPL", "throttle_ms": 250},
            {"symbol": "EUR/USD", "throttle_ms": 0},
            {"symbol": "MSFT", "throttle_ms": 250},
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


async def test_the_limits_of_the_connection_decide_not_the_hubs(rig: Rig) -> None:
    a = rig.client(limits=Limits(max_subscriptions=1, min_throttle_ms=100))
    await rig.subscribe(a, ["AAPL", "MSFT"], 0)
    await settle()
    (ack,) = a.replies()
    assert (ack["symbols"], ack["throttle_ms"], ack["rejected"]) == (["AAPL"], 100, {"MSFT": "limit_exceeded"})


async def test_ack_then_snapshot_then_live_ticks(rig: Rig) -> None:
    await rig.transport.publish([t("AAPL", 5), t("EUR/USD", 2)])
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL", "MSFT", "EUR/USD"], 0, snapshot=True)
    rig.hub.on_tick(t("AAPL", 6))
    rig.hub.on_tick(t("MSFT", 1))
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ack", "snapshot", "ticks"]
    assert [(x["symbol"], x["seq"]) for x in frames[1]["ticks"]] == [("AAPL", 5), ("EUR/USD", 2)], (
        "in request order; MSFT has no snapshot"
    )
    assert [(x["symbol"], x["seq"]) for x in frames[2]["ticks"]] == [("AAPL", 6), ("MSFT", 1)]


async def test_no_snapshot_when_not_asked(rig: Rig) -> None:
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client(writable=True)
    await rig.subscribe(a, ["AAPL"], 0, snapshot=False)
    await settle()
    assert a.peer.types() == ["ack"]


async def test_snapshot_race_a_tick_during_the_join_is_not_sent_twice(rig: Rig) -> None:
    """Join first, snapshot second, filter by seq: a tick published while the hub joins
    is both in the store and in the outbox; the client gets it once, in the snapshot."""
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client(writable=True)

    async def published_meanwhile(symbol: str) -> None:
        await rig.transport.publish([t(symbol, 6)])  # saved first...
        rig.hub.on_tick(t(symbol, 6))  # ...then delivered: this hub's route is already there

    rig.transport.on_join = published_meanwhile
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(t("AAPL", 6))  # a duplicate delivery by the transport
    rig.hub.on_tick(t("AAPL", 7))
    await settle()
    frames = a.peer.take()
    assert [f["type"] for f in frames] == ["ack", "snapshot", "ticks"]
    assert [x["seq"] for x in frames[1]["ticks"]] == [6]
    assert [x["seq"] for x in frames[2]["ticks"]] == [7]


async def test_snapshot_race_a_tick_newer_than_the_stored_snapshot(rig: Rig) -> None:
    """A tick that arrives before the snapshot read and is newer than what the read
    returns (another store replica, say) becomes the snapshot; the stale one is not sent."""
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client(writable=True)
    real = rig.store.snapshots

    async def snapshots(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        found = await real(symbols)
        rig.hub.on_tick(t("AAPL", 6))
        rig.hub.on_tick(t("AAPL", 7))
        return found

    rig.store.snapshots = snapshots  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(t("AAPL", 8))
    await settle()
    seqs = [(f["type"], [x["seq"] for x in f.get("ticks", [])]) for f in a.peer.take()]
    assert seqs == [("ack", []), ("snapshot", [7]), ("ticks", [8])]


async def test_a_throttled_snapshot_counts_as_the_last_delivery(rig: Rig) -> None:
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client()
    await rig.subscribe(a, ["AAPL"], T, snapshot=True)
    assert a.conn.sent_at == {"AAPL": rig.clock.now}
    rig.hub.on_tick(t("AAPL", 6))
    rig.fire(T)
    assert a.pending() == [], "not a throttle interval after the snapshot"
    rig.clock.now += T / 1000
    rig.fire(T)
    assert a.pending() == [("AAPL", 6)]


async def test_an_interval_end_during_a_throttled_subscribe_does_not_shorten_the_throttle(rig: Rig) -> None:
    """hub._queue_snapshot: 'the snapshot counts as the symbol's last delivery', so the next
    tick comes a throttle interval after the snapshot at the earliest, even when an interval
    ended while the subscribe waited for the store (and admitted the connection then)."""
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client()
    real = rig.store.snapshots

    async def snapshots(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        rig.hub.on_tick(t("AAPL", 6))
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
    rig.hub.on_tick(t("AAPL", 7))
    rig.fire(T)
    assert rig.clock.now - snapshot_at < T / 1000
    assert a.pending() == [], "less than throttle_ms after the snapshot"
    rig.clock.now += T / 1000
    rig.fire(T)
    assert a.pending() == [("AAPL", 7)]


async def test_a_failed_snapshot_read_still_subscribes(rig: Rig, caplog: pytest.LogCaptureFixture) -> None:
    await rig.transport.publish([t("AAPL", 5)])
    a = rig.client(writable=True)

    async def broken(symbols: Sequence[str]) -> dict[str, EncodedTick]:
        raise ConnectionError("store down")

    rig.store.snapshots = broken  # type: ignore[method-assign]
    await rig.subscribe(a, ["AAPL"], 0, snapshot=True)
    rig.hub.on_tick(t("AAPL", 6))
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
    monkeypatch.setattr(hub_module, "STORE_TIMEOUT", 0.05)
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
    assert hub_module.STORE_TIMEOUT > 0 and hub_module.RETRY_DELAY > 0
