"""What the hub receives, per symbol: its epoch and seq, gaps filled from history.

Ticks of a symbol reach the hub in seq order (the seq authority publishes in that
order), unless something between drops some (a Redis blip). Then the hub holds the newer
ticks of that symbol back, reads the missing ones from history, delivers them, then the
held ones: subscribers see no gap. Seqs that history no longer holds are recorded in
`Losses`, so that `conflated` never counts them. A tick of a new epoch means the
symbol's seq restarted: the hub resets its subscribers and carries on from it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from marketstream.core.losses import Losses
from marketstream.core.stats import Stats
from marketstream.core.store import MAX_HISTORY_READ, History, Store
from marketstream.core.tick import EncodedTick

log = logging.getLogger(__name__)

FILL_TIMEOUT = 5.0  # seconds a gap fill waits for history before it counts the gap as lost
MAX_HELD = 100_000  # ticks of one symbol held back during a fill; past it the fill gives up


class Received:
    """One symbol as this hub received it."""

    __slots__ = ("epoch", "held", "seq")

    def __init__(self, epoch: str, seq: int) -> None:
        self.epoch = epoch
        self.seq = seq  # the last seq delivered (0 right after a reset)
        self.held: list[EncodedTick] | None = None  # newer ticks, while a gap is being filled


class Inbound:
    """Checks each received tick against its symbol's epoch and seq before it is delivered."""

    def __init__(
        self,
        store: Store,
        deliver: Callable[[EncodedTick], None],
        reset: Callable[[str, str], None],
        losses: Losses,
        stats: Stats,
    ) -> None:
        self.store = store
        self.deliver = deliver  # hands a tick to the local subscribers
        self.reset = reset  # tells the local subscribers of a symbol about its new epoch
        self.losses = losses
        self.stats = stats
        self.symbols: dict[str, Received] = {}
        self._filling: set[asyncio.Task[None]] = set()

    def on_tick(self, tick: EncodedTick) -> None:
        """Deliver `tick` if it is the next of its symbol; drop it if already delivered;
        hold it back and fill the gap from history if some came before it unseen."""
        state = self.symbols.get(tick.symbol)
        if state is None:  # the first tick since this hub joined the symbol
            self.symbols[tick.symbol] = Received(tick.epoch, tick.seq)
            self.deliver(tick)
            return
        if state.epoch != tick.epoch:
            self._new_epoch(state, tick)
        if state.held is not None:
            self._hold(state, tick)
            return
        last = state.seq
        if tick.seq == last + 1 or not last:
            state.seq = tick.seq
            self.deliver(tick)
        elif tick.seq <= last:
            self.stats.duplicates += 1
        else:
            state.held = [tick]
            task = asyncio.get_running_loop().create_task(self._fill(tick.symbol, state, last, state.held))
            self._filling.add(task)  # keep a reference until it is done
            task.add_done_callback(self._filling.discard)

    def told(self, symbol: str, epoch: str) -> str:
        """A subscriber of `symbol` was just told `epoch` (read from the store after the
        hub joined the symbol: the ack's epoch). Returns the epoch of the ticks the hub
        delivers next, which the subscriber must be reset to when it differs.

        Until its first tick, the hub knows no epoch of a symbol; the store's may change
        in between (its state was lost), and that tick must still reset whoever was told
        the old one. So a symbol without a tick yet takes `epoch`, and a tick of another
        resets its subscribers (`_new_epoch`). When ticks came first, their epoch stays."""
        state = self.symbols.get(symbol)
        if state is None:
            self.symbols[symbol] = Received(epoch, 0)
            return epoch
        return state.epoch

    def forget(self, symbol: str) -> None:
        """The hub left `symbol`: start afresh if it joins again (no gap to fill: a
        snapshot covers it; each new subscriber's epoch comes through `told`). A fill in
        flight ends (the state it owns is gone)."""
        self.symbols.pop(symbol, None)

    def stop(self) -> None:
        for task in self._filling:
            task.cancel()

    def _new_epoch(self, state: Received, tick: EncodedTick) -> None:
        log.warning("hub: %s has a new epoch %s (was %s): its seq restarted", tick.symbol, tick.epoch, state.epoch)
        state.epoch = tick.epoch
        state.seq = 0
        state.held = None  # a fill in flight belongs to the old epoch: it stops
        self.stats.resets += 1
        self.losses.reset(tick.symbol)
        self.reset(tick.symbol, tick.epoch)

    def _hold(self, state: Received, tick: EncodedTick) -> None:
        held = state.held
        assert held is not None
        held.append(tick)
        if len(held) > MAX_HELD:  # history is far too slow: give the fill up
            log.error("hub: gap fill of %s holds %d ticks; giving it up", tick.symbol, len(held))
            self._release(tick.symbol, state, None)

    async def _fill(self, symbol: str, state: Received, after: int, held: list[EncodedTick]) -> None:
        """Read the gap from history, retrying (a connection that died with the one that
        dropped the ticks fails the first read) until FILL_TIMEOUT; then release. The
        fill owns `held`: once another fill (a new epoch, a later gap) holds the symbol's
        ticks, or none does, this one ends without touching them."""
        history: History | None = None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + FILL_TIMEOUT
        pause = 0.05
        while history is None and state.held is held and self.symbols.get(symbol) is state:
            try:
                left = deadline - loop.time()
                history = await asyncio.wait_for(self.store.history(symbol, after, MAX_HISTORY_READ), max(0.01, left))
            except Exception as exc:
                if loop.time() + pause >= deadline:
                    log.error("hub: cannot read the history of %s to fill a gap after seq %d: %s", symbol, after, exc)
                    break
                await asyncio.sleep(pause)
                pause = min(pause * 2, 1.0)
        if state.held is held and self.symbols.get(symbol) is state:
            self._release(symbol, state, history)

    def _release(self, symbol: str, state: Received, history: History | None) -> None:
        """Deliver what history has of the gap, count the rest lost, then the held ticks."""
        held, state.held = state.held or [], None
        first_held = held[0].seq
        if history is not None and history.epoch == state.epoch:
            for tick in history.ticks:
                if tick.seq <= state.seq:
                    continue
                if tick.seq >= first_held:
                    break
                self._lose(symbol, state.seq + 1, tick.seq - 1)
                state.seq = tick.seq
                self.stats.ticks_filled += 1
                self.deliver(tick)
        self._lose(symbol, state.seq + 1, first_held - 1)
        state.seq = first_held - 1
        for tick in held:
            self.on_tick(tick)

    def _lose(self, symbol: str, first: int, last: int) -> None:
        if last >= first:
            log.warning("hub: ticks %d..%d of %s were lost before this hub", first, last, symbol)
            self.stats.ticks_lost += last - first + 1
            self.losses.record(symbol, first, last)
