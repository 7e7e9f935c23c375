"""A connection as the core sees it: subscriptions, outbox, and `drain`, which sends it.

Framework-free: the edge (the consumer) hands the hub an async `send(bytes)`, a
`closer(code, reason)` that closes the WebSocket, a `writable()` hint and, where the
server offers one, a raw writer `write(frame) -> bool` that writes an already-framed
WebSocket frame at once (`core/writer.py` builds them); it gets a `Connection` back from
`Hub.connect`. All frames of a connection leave one at a time, in outbox order, so a
request's reply always precedes the frames that the request causes: in the hub's flush
when the socket takes data at once (`write_now` with a raw writer, else `drain`), else in
a writer task (`drain`, through `send`) that exists only while the connection has a backlog.

The edge reads `codec`, `limits`, `entitlement`, `session`, `closed` and the counters, and calls
`reply` and `close`; everything else is written by the core only (hub, fanout, throttle).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator

from marketstream.core.closes import Close
from marketstream.core.codec import Codec
from marketstream.core.entitlements import Entitlement
from marketstream.core.limits import Limits
from marketstream.core.losses import Losses
from marketstream.core.outbox import Outbox
from marketstream.core.stats import Stats
from marketstream.core.tick import EncodedTick
from marketstream.core.writer import MAX_FRAME_BYTES, FrameWriter, frame, payload_size

log = logging.getLogger(__name__)

Send = Callable[[bytes], Awaitable[None]]
Closer = Callable[[Close, str], None]
# writes one whole frame (header and payload) at once; False: the WebSocket is closing or closed
Write = Callable[[bytes], bool]

MAX_CONTROLS = 256  # unsent replies a connection may have before it counts as not reading
EVERYTHING = Entitlement.everything()


def _never() -> bool:
    return False


def _no_closer(code: Close, reason: str) -> None:
    return None


class Connection:
    """One client's state. `subscriptions` maps symbol -> effective throttle_ms."""

    __slots__ = (
        "_closer",
        "_held",
        "_send",
        "_stats",
        "_writer",
        "bars",
        "bars_sent_at",
        "behind_since",
        "busy_since",
        "bytes_sent",
        "clock",
        "close_code",
        "codec",
        "dirty",
        "entitlement",
        "frames",
        "limits",
        "outbox",
        "phase",
        "sent_at",
        "session",
        "subscriptions",
        "ticks_sent",
        "writable",
        "write",
    )

    def __init__(
        self,
        codec: Codec,
        send: Send,
        limits: Limits,
        session: str = "",
        closer: Closer = _no_closer,
        writable: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
        stats: Stats | None = None,
        losses: Losses | None = None,
        entitlement: Entitlement | None = None,
        write: Write | None = None,
    ) -> None:
        self.codec = codec
        self.limits = limits
        self.entitlement = entitlement or EVERYTHING  # the symbols this connection may subscribe to
        self.session = session
        self.outbox = Outbox(limits.max_pending, losses)
        self.subscriptions: dict[str, int] = {}
        self.sent_at: dict[str, float] = {}  # symbol -> clock() of the last throttled delivery
        self.bars: dict[str, tuple[str, ...]] = {}  # symbol -> the bar intervals of its subscription
        self.bars_sent_at: dict[str, float] = {}  # symbol -> clock() of its last throttled bars
        self.dirty = False  # queued in the fanout's flush list
        self.phase = random.random()  # where in a flush delay's cycle this connection is flushed (`Stagger`)
        self.behind_since: float | None = None  # first conflation since the outbox was last empty
        self.busy_since: float | None = None  # start of the send in progress
        self.close_code: Close | None = None  # set once by `close`
        self.frames = 0
        self.ticks_sent = 0
        self.bytes_sent = 0  # payload bytes of the frames sent
        # True when a send would not wait (the socket's write buffer is empty); without
        # it, every frame goes through a writer task
        self.writable: Callable[[], bool] = writable or _never
        # the edge's raw writer (None: every frame goes through `send`); used only after `ready()`
        self.write = write
        self.clock = clock  # the hub's clock: `is_behind` compares with it
        self._send = send
        self._closer = closer
        self._stats = stats if stats is not None else Stats()
        self._held = 0  # > 0 while a request is being handled: ticks wait behind its reply
        self._writer: asyncio.Task[None] | None = None

    @property
    def closed(self) -> bool:
        """True once `close` was called: nothing more is sent."""
        return self.close_code is not None

    # -- the edge's calls ------------------------------------------------------------

    def reply(self, message: dict[str, object]) -> None:
        """Queue a control message (encoded now, sent in order).

        A client that lets more than MAX_CONTROLS replies pile up is not reading: it is
        closed with 1013 like any slow client.
        """
        if self.closed:
            return
        if len(self.outbox.controls) >= MAX_CONTROLS:
            self.close(Close.TRY_AGAIN_LATER, f"{MAX_CONTROLS} replies unread")
            return
        self.outbox.add_control(self.codec.message(message))
        self.wake()

    def close(self, code: Close, reason: str = "") -> None:
        """Stop sending and have the edge close the WebSocket with `code`, once.

        After this returns nothing more is sent (pending frames are dropped) and later
        calls do nothing. `Close.GOING_AWAY` means the peer already left: the edge's
        closer is not called. The edge's closer runs synchronously and must not block.
        """
        if self.close_code is not None:
            return
        self.close_code = code
        self._stats.closes[code] += 1
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        if code == Close.TRY_AGAIN_LATER:
            log.warning("closing slow client %s (1013): %s", self.session, reason)
        if code != Close.GOING_AWAY:
            self._closer(code, reason)

    async def wait_closed(self) -> None:
        """After `close`: return once no frame of this connection is being sent."""
        writer = self._writer
        if writer is not None and writer is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await writer

    # -- the core's calls ------------------------------------------------------------

    @property
    def held(self) -> bool:
        """True while a request is being handled (ticks wait behind its reply)."""
        return self._held > 0

    @contextlib.contextmanager
    def holding(self) -> Iterator[None]:
        """Hold ticks back while a request is handled, so that they follow its reply."""
        self._held += 1
        try:
            yield
        finally:
            self._held -= 1
            self.wake()

    def wake(self) -> None:
        """Have the outbox sent by a writer task, unless a request holds the connection.

        The task lives only while there is something to send: most frames are sent by
        the hub's flush directly (`ready()`), so an idle connection costs no task.
        """
        self.dirty = False
        if self._held or self.close_code is not None or not self.outbox:
            return
        task = self._writer
        if task is None or task.done():
            self._writer = asyncio.get_running_loop().create_task(self._write_out())

    async def _write_out(self) -> None:
        """The writer task: `drain`, then let go of the task (an idle connection holds none)."""
        try:
            await self.drain()
        finally:
            if self._writer is asyncio.current_task():
                self._writer = None

    def reset(self, symbol: str, epoch: str) -> None:
        """`symbol`'s seq restarted in a new epoch: drop its pending ticks, accept its seq
        from 1 again, and tell the client (`reset`) before any tick of the new epoch."""
        self.outbox.discard([symbol])
        self.outbox.last_seq.pop(symbol, None)
        self.reply({"type": "reset", "symbol": symbol, "epoch": epoch})

    def is_behind(self, now: float, timeout: float) -> bool:
        """True when the client has stayed behind (conflating or stuck in a send) for `timeout` s."""
        if self.behind_since is not None and now - self.behind_since > timeout:
            return True
        return self.busy_since is not None and now - self.busy_since > timeout

    def ready(self) -> bool:
        """True when the flush can send now without waiting: not held, not already
        sending, and, without a raw writer, the socket takes data at once (its write
        buffer is empty). A raw writer says for itself, per frame, when the transport
        does not take more (`write_now`)."""
        if self._held or self.busy_since is not None or self.close_code is not None:
            return False
        return self.write is not None or self.writable()

    def _next_frame(self) -> tuple[bytes, list[EncodedTick] | None]:
        """Take the next frame's worth out of the outbox: a control frame first, then the
        pending ticks (at most MAX_FRAME_BYTES of them), then the pending bars. Returns
        the payload, or the ticks (for `write_now`, which may share their frame)."""
        outbox = self.outbox
        if outbox.conflations and self.behind_since is None:
            self.behind_since = self.clock()
        if outbox.controls:
            return outbox.take_control(), None
        if outbox.ticks or outbox.latest:
            ticks = outbox.take_ticks(MAX_FRAME_BYTES, self.codec.binary)
            self.ticks_sent += len(ticks)
            return b"", ticks
        return self.codec.bars(outbox.take_bars()), None

    def write_now(self, frames: FrameWriter) -> None:
        """Write what the outbox holds with the raw writer, one frame per call, in outbox
        order, while the transport takes them; wake the writer task for the rest.

        Only after `ready()` and only with a raw writer (`write`). Synchronous: no frame
        of this connection is in flight in between. The transport may buffer a frame
        that the socket does not take at once (up to its high-water mark: no wait, and
        several frames leave in one system call later). When the raw writer refuses a
        frame (the transport paused writing, or the WebSocket is closing or gone), that
        frame goes first in line to the writer task, which sends it through `send`: it
        waits there like any send (a slow client is then `busy_since`, and closed with
        1013 past the timeout), or finds out, as `drain` does, that the peer is gone.
        """
        write = self.write
        assert write is not None
        outbox = self.outbox
        binary = self.codec.binary
        while outbox and self.close_code is None and self._held == 0:
            payload, ticks = self._next_frame()
            data = frames.ticks(self.codec, ticks) if ticks is not None else frame(payload, binary)
            if not write(data):  # closing, gone or paused: `send` knows which (it raises when gone)
                outbox.put_back(self.codec.ticks(ticks) if ticks is not None else payload)
                self.wake()
                return
            self.frames += 1
            self.bytes_sent += payload_size(data)  # the payload, as `drain` counts
        if not outbox:
            outbox.conflations = 0
            self.behind_since = None

    async def drain(self, direct: bool = False) -> None:
        """Send what the outbox holds, one frame per call of `send`, in outbox order,
        counting frames, ticks and bytes sent.

        Returns when the outbox is empty, a request holds the connection, or the peer is
        gone. Runs in the connection's writer task, or with `direct` in the hub's flush
        (after `ready()`): then it sends only while the socket takes data at once and
        leaves the rest to the writer task, so one backed-up client never makes the
        flush, and the others, wait.
        """
        if self.busy_since is not None or self.close_code is not None:
            return
        outbox = self.outbox
        send = self._send
        codec = self.codec
        sent = 0
        while outbox and self.close_code is None and self._held == 0:
            if direct and sent and not self.writable():
                self.wake()
                break
            payload, ticks = self._next_frame()
            if ticks is not None:
                payload = codec.ticks(ticks)
            self.busy_since = self.clock()
            try:
                await send(payload)
            except Exception as exc:  # the peer went away: its disconnect detaches it
                log.debug("connection %s: send failed: %r", self.session, exc)
                self.close(Close.GOING_AWAY, "send failed")
                return
            finally:
                self.busy_since = None
            self.frames += 1
            self.bytes_sent += len(payload)
            sent += 1
        if not outbox:
            outbox.conflations = 0
            self.behind_since = None
