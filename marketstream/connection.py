"""A connection as the hub sees it: subscriptions, outbox, and `drain`, which sends it.

Framework-free: the consumer gives it an async `send(bytes)`, a `kill(code)` and a
`writable()` hint. All frames of a connection leave through `drain`, one at a time, in
outbox order, so a request's reply always precedes the frames that the request causes.
`drain` runs in the hub's flush when the socket takes data at once, else in a writer
task that exists only while the connection has a backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from marketstream.codec import Codec
from marketstream.outbox import Outbox

log = logging.getLogger(__name__)

Send = Callable[[bytes], Awaitable[None]]

MAX_CONTROLS = 256  # unsent replies a connection may have before it counts as not reading


def _never() -> bool:
    return False


class Connection:
    """One client's state. `subscriptions` maps symbol -> effective throttle_ms."""

    __slots__ = (
        "_send",
        "_task",
        "behind_since",
        "busy_since",
        "clock",
        "closed",
        "codec",
        "dirty",
        "frames",
        "held",
        "kill",
        "outbox",
        "sent_at",
        "session",
        "subscriptions",
        "ticks_sent",
        "writable",
    )

    def __init__(
        self,
        codec: Codec,
        send: Send,
        max_pending: int,
        session: str = "",
        kill: Callable[[int], None] | None = None,
        writable: Callable[[], bool] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.codec = codec
        self.outbox = Outbox(max_pending)
        self.subscriptions: dict[str, int] = {}
        self.sent_at: dict[str, float] = {}  # symbol -> monotonic time of the last throttled delivery
        self.dirty = False  # queued in the hub's flush list
        self.held = 0  # > 0 while a request is being handled: ticks wait behind its reply
        self.behind_since: float | None = None  # first conflation since the outbox was last empty
        self.busy_since: float | None = None  # start of the send in progress
        self.closed = False
        self.frames = 0
        self.ticks_sent = 0
        self.session = session
        self.kill = kill  # close the connection with a code, from outside its writer
        # True when a send would not wait (the socket's write buffer is empty); without
        # it, every frame goes through a writer task
        self.writable: Callable[[], bool] = writable or _never
        self.clock = clock  # the hub's clock: `is_behind` compares with it
        self._send = send
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Send what is queued so far (the welcome)."""
        self.wake()

    async def stop(self) -> None:
        """Stop sending; pending frames are dropped."""
        self.closed = True
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            try:
                await task
            except (asyncio.CancelledError, Exception):
                pass

    def wake(self) -> None:
        """Have the outbox sent by a writer task, unless a request holds the connection.

        The task lives only while there is something to send: most frames are sent by
        the hub's flush directly (`ready()`), so an idle connection costs no task.
        """
        self.dirty = False
        if self.held or self.closed or not self.outbox:
            return
        task = self._task
        if task is None or task.done():
            self._task = asyncio.get_running_loop().create_task(self.drain())

    def reply(self, message: dict[str, object]) -> None:
        """Queue a control message (encoded now, sent in order).

        A client that lets more than MAX_CONTROLS replies pile up is not reading: it is
        closed with 1013 like any slow client.
        """
        if len(self.outbox.controls) >= MAX_CONTROLS:
            self.give_up(f"{MAX_CONTROLS} replies unread")
            return
        self.outbox.add_control(self.codec.message(message))
        self.wake()

    def give_up(self, reason: str) -> None:
        """The client is too slow: stop sending and have it closed with 1013 (once)."""
        if self.closed:
            return
        self.closed = True
        log.warning("closing slow client %s (1013): %s", self.session, reason)
        if self.kill is not None:
            self.kill(1013)

    def is_behind(self, now: float, timeout: float) -> bool:
        """True when the client has stayed behind (conflating or stuck in a send) for `timeout` s."""
        if self.behind_since is not None and now - self.behind_since > timeout:
            return True
        return self.busy_since is not None and now - self.busy_since > timeout

    def ready(self) -> bool:
        """True when `drain()` can run now without waiting: not held, not already
        sending, and the socket takes data at once (its write buffer is empty)."""
        return not self.held and self.busy_since is None and not self.closed and self.writable()

    async def drain(self, direct: bool = False) -> None:
        """Send what the outbox holds, one frame per call of `send`, in outbox order.

        Returns when the outbox is empty, a request holds the connection, or the peer is
        gone. Runs in the connection's writer task, or with `direct` in the hub's flush
        (after `ready()`): then it sends only while the socket takes data at once and
        leaves the rest to the writer task, so one backed-up client never makes the
        flush, and the others, wait.
        """
        if self.busy_since is not None or self.closed:
            return
        outbox = self.outbox
        send = self._send
        sent = 0
        while outbox and not self.closed and self.held == 0:
            if direct and sent and not self.writable():
                self.wake()
                break
            if outbox.conflations and self.behind_since is None:
                self.behind_since = self.clock()
            if outbox.controls:
                frame = outbox.take_control()
            else:
                ticks = outbox.take_ticks()
                frame = self.codec.ticks(ticks)
                self.ticks_sent += len(ticks)
            self.busy_since = self.clock()
            try:
                await send(frame)
            except Exception as exc:  # the peer went away: the disconnect event cleans up
                log.debug("connection %s: send failed: %r", self.session, exc)
                self.closed = True
                return
            finally:
                self.busy_since = None
            self.frames += 1
            sent += 1
        if not outbox:
            outbox.conflations = 0
            self.behind_since = None
