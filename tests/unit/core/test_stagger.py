"""The flush delay's slots (`Stagger`, core/fanout.py): each connection is flushed at its
own phase of the delay's cycle, at most one delay after it got something, and the
connections of a cycle leave spread over the cycle's slots instead of in one round."""

from __future__ import annotations

import asyncio
import itertools

from marketstream.core.closes import Close
from marketstream.core.codec import CODEC
from marketstream.core.connection import Connection
from marketstream.core.fanout import MAX_SLOTS, SLOT, Fanout, Stagger
from marketstream.core.limits import Limits
from tests.unit.core.fakes import Clock, Peer, settle, tick

DELAY = 0.1  # 20 slots of 5 ms
SLACK = 0.04  # the loop's own lateness on a busy test machine (a second cycle would be 0.1 more)


class TimedPeer(Peer):
    """Records the loop time of each frame it is sent."""

    def __init__(self) -> None:
        super().__init__()
        self.times: list[float] = []

    async def send(self, frame: bytes) -> None:
        self.times.append(asyncio.get_running_loop().time())
        await super().send(frame)


def connections(n: int) -> tuple[Fanout, list[TimedPeer], list[Connection]]:
    fanout = Fanout(Clock(), DELAY, 5.0)
    peers = [TimedPeer() for _ in range(n)]
    conns = [
        Connection(CODEC["msgpack"], p.send, Limits(max_pending=1000), "s", p.closer, p.writable, Clock())
        for p in peers
    ]
    for conn in conns:
        fanout.route(conn, "AAPL")
    return fanout, peers, conns


def test_a_delay_is_cut_in_slots_of_about_five_ms() -> None:
    assert (Stagger(0.04).slots, Stagger(0.04).slot) == (8, 0.005)
    assert Stagger(0.001).slots == 1 and Stagger(0.001).slot == 0.001, "a short delay is one slot"
    big = Stagger(10.0)
    assert big.slots == MAX_SLOTS and abs(big.slot * big.slots - 10.0) < 1e-9
    assert SLOT == 0.005


async def test_every_connection_gets_its_tick_within_the_delay_spread_over_the_slots() -> None:
    fanout, peers, _ = connections(200)
    loop = asyncio.get_running_loop()
    start = loop.time()
    fanout.deliver(tick("AAPL", 1))
    await asyncio.sleep(DELAY + SLACK)
    await settle()
    assert all(p.ticks() == [("AAPL", 1)] for p in peers), "each connection gets the tick once"
    waits = [p.times[0] - start for p in peers]
    assert max(waits) <= DELAY + SLACK, f"a tick waited {max(waits) * 1000:.1f} ms with a {DELAY * 1000:.0f} ms delay"
    rounds = {round(p.times[0], 4) for p in peers}
    assert len(rounds) >= 10, f"200 connections left in {len(rounds)} rounds: not spread over the cycle's 20 slots"


async def test_each_connection_keeps_its_cadence() -> None:
    """Ticks every ms for 8 delays: each connection gets a frame about once per delay, at
    its own phase (never two frames within one delay, not much fewer than 8)."""
    fanout, peers, _ = connections(30)
    for seq in range(1, 8 * int(DELAY * 1000) + 1):
        fanout.deliver(tick("AAPL", seq))
        await asyncio.sleep(0.001)
    await asyncio.sleep(DELAY + SLACK)
    await settle()
    last = 8 * int(DELAY * 1000)
    for peer in peers:
        times = peer.times
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # a slot that fires late shortens the gap to the next one (the phase stays): by
        # less than a cycle; a flush per tick or per slot would give gaps of a few ms
        assert min(gaps) >= DELAY / 2, f"two frames {min(gaps) * 1000:.1f} ms apart"
        assert len(times) >= 5, f"{len(times)} frames in 8 delays"
        assert [seq for _, seq in peer.ticks()] == list(range(1, last + 1)), "every tick, in order"


async def test_a_whole_flush_takes_the_waiting_connections_and_their_timers() -> None:
    fanout, peers, _ = connections(50)
    fanout.deliver(tick("AAPL", 1))
    await settle()  # placed in their slots
    assert fanout.stagger is not None and fanout.stagger._due
    await fanout._flush()
    assert all(p.ticks() == [("AAPL", 1)] for p in peers)
    assert not fanout.stagger._due
    await asyncio.sleep(DELAY + SLACK)
    await settle()
    assert all(p.frames == [] for p in peers), "no connection flushed twice"


async def test_stop_cancels_the_slots() -> None:
    fanout, peers, _ = connections(20)
    fanout.deliver(tick("AAPL", 1))
    await settle()
    fanout.stop()
    await asyncio.sleep(DELAY + SLACK)
    await settle()
    assert all(p.frames == [] for p in peers)


async def test_a_connection_closed_while_it_waits_for_its_slot_is_skipped() -> None:
    fanout, peers, conns = connections(5)
    fanout.deliver(tick("AAPL", 1))
    await settle()
    conns[0].close(Close.GOING_AWAY, "gone")
    await asyncio.sleep(DELAY + SLACK)
    await settle()
    assert peers[0].frames == []
    assert all(p.ticks() == [("AAPL", 1)] for p in peers[1:])
