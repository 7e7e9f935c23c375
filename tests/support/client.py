"""The WebSocket test client: decodes frames per encoding and keeps every frame it receives.

Each received frame is kept with its receive time (monotonic and wall clock) and whether it
was binary, so tests can check ordering (a reply before the frames it causes), seq per
symbol, and delivery timing. `stream()` connects, waits for the `welcome`, and on leaving
checks that every server frame had the connection's kind (binary for msgpack, text for JSON).

The seq check is the load tests' (`loadtest.streamcheck.StreamCheck`): one rule for
"seq only ever increases", whoever checks.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import msgpack
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from loadtest.streamcheck import StreamCheck, Totals

MSGPACK = Subprotocol("marketstream.v1.msgpack")
JSON = Subprotocol("marketstream.v1.json")
SUBPROTOCOL = {"msgpack": MSGPACK, "json": JSON}
REPLY_TYPES = ("ack", "subscriptions", "pong", "error")
TICK_TYPES = ("snapshot", "ticks")
WAIT = 15.0  # seconds: generous for a loaded machine; semantics are checked exactly, not by time


@dataclass(frozen=True)
class Frame:
    """One server frame as received."""

    index: int
    at: float  # time.monotonic() when the client received it
    binary: bool
    message: dict[str, Any]
    wall: int = 0  # time.time_ns() when the client received it (to compare with a tick's ts)

    @property
    def type(self) -> str:
        return str(self.message.get("type"))


@dataclass(frozen=True)
class Delivery:
    """One tick as received: the frame it came in and the tick itself."""

    index: int
    at: float
    kind: str  # "snapshot" or "ticks"
    tick: dict[str, Any]
    wall: int = 0

    @property
    def age(self) -> float:
        """Seconds from the tick's ingest (ts) to its receipt by the client."""
        return (self.wall - int(self.tick["ts"])) / 1e9

    @property
    def symbol(self) -> str:
        return str(self.tick["symbol"])

    @property
    def seq(self) -> int:
        return int(self.tick["seq"])


def decode(data: str | bytes) -> dict[str, Any]:
    """A server frame: msgpack when binary, JSON when text; it must be a map."""
    value = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else orjson.loads(data)
    if not isinstance(value, dict):
        raise AssertionError(f"server frame is not a map: {value!r:.200}")
    return value


def encode(request: Any, binary: bool) -> str | bytes:
    """A client frame: msgpack bytes (a binary frame) or JSON text."""
    return msgpack.packb(request, use_bin_type=True) if binary else orjson.dumps(request).decode()


def assert_seq_increasing(deliveries: Iterable[Delivery], lost: int = 0) -> Totals:
    """Per symbol, seq only ever increases (no duplicates, no going back), across snapshot and
    ticks; and every skipped seq is accounted for by `conflated` except `lost` of them
    (`seq - previous - 1 - conflated` summed). Returns the counts."""
    check = StreamCheck(Totals())
    for d in deliveries:
        if d.kind == "reset":
            check.reset(d.tick["symbol"])
            continue
        check.ticks([d.tick], d.wall, int(d.at * 1e9), snapshot=d.kind == "snapshot")
        if check.totals.seq_violations or check.totals.overcounted:
            raise AssertionError(f"{check.violations[0]} ({d.kind}, frame {d.index})")
    if check.totals.lost != lost:
        raise AssertionError(f"{check.totals.lost} ticks lost (skipped, not conflated); expected {lost}")
    return check.totals


class StreamClient:
    """A connected client. `encoding` is the codec the server is expected to use for its frames."""

    def __init__(self, ws: ClientConnection, encoding: str) -> None:
        self.ws = ws
        self.encoding = encoding
        self.frames: list[Frame] = []
        self.closed = False
        self.close_code: int | None = None  # code of the close frame received; None if none came
        self.read_error: Exception | None = None  # what stopped the reader, other than a close
        self._changed = asyncio.Event()
        self._ids = 0
        self._reader: asyncio.Task[None] | None = None
        self.start_reading()

    # -- receiving -------------------------------------------------------------------

    def start_reading(self) -> None:
        """Receive frames in a task (again, after `stop_reading`): what was buffered first."""
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def stop_reading(self) -> None:
        """Stop receiving: frames wait in the client's buffer, then in the kernel's, then at the server."""
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self) -> None:
        stopped = False
        try:
            async for data in self.ws:
                at, wall = time.monotonic(), time.time_ns()
                self.frames.append(Frame(len(self.frames), at, isinstance(data, bytes), decode(data), wall))
                self._notify()
        except ConnectionClosed:
            pass
        except asyncio.CancelledError:
            stopped = True  # stop_reading(): the connection stays open
            raise
        except Exception as exc:
            self.read_error = exc
            raise
        finally:
            if not stopped:
                self._mark_closed()

    def _mark_closed(self) -> None:
        self.closed = True
        rcvd = self.ws.protocol.close_rcvd
        self.close_code = rcvd.code if rcvd is not None else None
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    async def _changes(self, remaining: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._changed.wait(), remaining)

    async def wait_for(self, predicate: Callable[[Frame], bool], within: float = WAIT, start: int = 0) -> Frame:
        """The first frame from index `start` on that satisfies `predicate`, waiting for it if needed."""
        deadline = time.monotonic() + within
        i = start
        while True:
            while i < len(self.frames):
                if predicate(self.frames[i]):
                    return self.frames[i]
                i += 1
            if self.closed:
                why = f"; reading failed: {self.read_error!r}" if self.read_error else ""
                raise AssertionError(f"connection closed (code {self.close_code}) before the expected frame came{why}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                tail = [f.message for f in self.frames[-5:]]
                raise AssertionError(f"no expected frame within {within} s; last frames: {tail!r:.1500}")
            await self._changes(remaining)

    async def wait_closed(self, within: float = WAIT) -> int | None:
        """Wait until the server closes the connection; returns the close code (None: no close frame)."""
        deadline = time.monotonic() + within
        while not self.closed:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"the server did not close the connection within {within} s")
            await self._changes(remaining)
        return self.close_code

    async def wait_ticks(self, symbol: str, count: int, within: float = WAIT, start: int = 0) -> list[Delivery]:
        """Wait until at least `count` ticks of `symbol` arrived in frames from index `start`."""
        deadline = time.monotonic() + within
        while True:
            got = [d for d in self.deliveries(symbol) if d.index >= start]
            if len(got) >= count:
                return got
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(got)} ticks of {symbol} within {within} s, wanted {count}")
            await self.wait_for(lambda f: f.type in TICK_TYPES, remaining, start=len(self.frames))

    async def wait_seq(self, symbol: str, seq: int, within: float = WAIT) -> None:
        """Wait until a tick of `symbol` with at least `seq` arrived."""
        deadline = time.monotonic() + within
        while not any(d.seq >= seq for d in self.deliveries(symbol)):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                last = [d.seq for d in self.deliveries(symbol)][-3:]
                raise AssertionError(f"no tick of {symbol} with seq >= {seq} within {within} s (last: {last})")
            await self.wait_for(lambda f: f.type in TICK_TYPES, remaining, start=len(self.frames))

    def deliveries(self, symbol: str | None = None, start: int = 0, resets: bool = False) -> list[Delivery]:
        """Every tick received (snapshot and ticks frames), in order of arrival; with
        `resets`, each `reset` frame too, as a delivery of kind "reset" whose tick is the frame."""
        out = []
        for frame in self.frames[start:]:
            if resets and frame.type == "reset" and (symbol is None or frame.message["symbol"] == symbol):
                out.append(Delivery(frame.index, frame.at, "reset", frame.message, frame.wall))
            elif frame.type in TICK_TYPES:
                for tick in frame.message["ticks"]:
                    if symbol is None or tick["symbol"] == symbol:
                        out.append(Delivery(frame.index, frame.at, frame.type, tick, frame.wall))
        return out

    def of_type(self, kind: str) -> list[Frame]:
        return [f for f in self.frames if f.type == kind]

    # -- sending ---------------------------------------------------------------------

    def next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def send(self, request: Any, binary: bool | None = None) -> int:
        """Send a request (in the connection's codec unless `binary` says otherwise).
        Returns the index of the next frame, from which the reply is to be looked for."""
        mark = len(self.frames)
        await self.ws.send(encode(request, self.encoding == "msgpack" if binary is None else binary))
        return mark

    async def request(self, op: str, *, binary: bool | None = None, within: float = WAIT, **fields: Any) -> Frame:
        """Send `{op, id, **fields}` and return its reply (the first frame echoing the id)."""
        request_id = fields.pop("id", None)
        if request_id is None:
            request_id = self.next_id()
        mark = await self.send({"op": op, "id": request_id, **fields}, binary)
        return await self.wait_for(
            lambda f: f.type in REPLY_TYPES and f.message.get("id") == request_id, within, start=mark
        )

    async def subscribe(self, symbols: list[str], **fields: Any) -> Frame:
        """Subscribe; the `ack` (a test failure on any other reply)."""
        reply = await self.request("subscribe", symbols=symbols, **fields)
        if reply.type != "ack":
            raise AssertionError(f"subscribe answered {reply.message}")
        return reply

    async def unsubscribe(self, symbols: list[str], **fields: Any) -> Frame:
        """Unsubscribe; the `ack` (a test failure on any other reply)."""
        reply = await self.request("unsubscribe", symbols=symbols, **fields)
        if reply.type != "ack":
            raise AssertionError(f"unsubscribe answered {reply.message}")
        return reply

    async def ping(self) -> Frame:
        """The `pong` to a `ping` request."""
        reply = await self.request("ping")
        if reply.type != "pong":
            raise AssertionError(f"ping answered {reply.message}")
        return reply

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 5.0)
        with contextlib.suppress(Exception):
            await self.stop_reading()

    def check_frame_kinds(self) -> None:
        """Every server frame is binary on msgpack connections and text on JSON ones."""
        want_binary = self.encoding == "msgpack"
        wrong = [f for f in self.frames if f.binary != want_binary]
        if wrong:
            raise AssertionError(f"{len(wrong)} frames of the wrong kind on a {self.encoding} connection: {wrong[0]}")


@contextlib.asynccontextmanager
async def stream(
    url: str,
    encoding: str = "msgpack",
    *,
    how: str = "subprotocol",
    **connect_kwargs: Any,
) -> AsyncIterator[StreamClient]:
    """Connect, wait for the welcome, and yield the client; check the frame kinds and close it after.

    `how`: "subprotocol" (offer the encoding's subprotocol), "query" (`?encoding=`), or "none"
    (neither: the server's default, msgpack). `connect_kwargs` go to websockets' `connect`
    (`sock=`, `max_queue=`, ...).
    """
    subprotocols = [SUBPROTOCOL[encoding]] if how == "subprotocol" else None
    if how == "query":
        url = f"{url}?encoding={encoding}"
    ws = await connect(
        url,
        subprotocols=subprotocols,
        compression=None,
        max_size=None,
        ping_interval=None,
        open_timeout=WAIT,
        close_timeout=5,
        **connect_kwargs,
    )
    client = StreamClient(ws, encoding)
    try:
        welcome = await client.wait_for(lambda f: True)
        if welcome.type != "welcome":
            raise AssertionError(f"the first frame is not a welcome: {welcome.message}")
        yield client
        client.check_frame_kinds()
    finally:
        await client.aclose()
