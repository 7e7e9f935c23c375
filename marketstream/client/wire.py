"""Frames on the wire: the two encodings, and a bounded queue of received events."""

from __future__ import annotations

import asyncio
import collections
import json
from typing import Any, Generic, TypeVar

import msgpack

ENCODINGS = ("msgpack", "json")
SUBPROTOCOLS = {"msgpack": "marketstream.v1.msgpack", "json": "marketstream.v1.json"}
DEFAULT_URL = "ws://127.0.0.1:8000/ws/v1/stream"

T = TypeVar("T")


class BadFrame(ValueError):
    """A server frame that is not a map with a `type`."""


def encode(request: dict[str, Any], encoding: str) -> bytes | str:
    """A request in the connection's encoding: a msgpack binary frame or a JSON text frame."""
    if encoding == "msgpack":
        return msgpack.packb(request, use_bin_type=True)
    return json.dumps(request, separators=(",", ":"))


def decode(data: bytes | str) -> dict[str, Any]:
    """A server frame: msgpack when binary, JSON when text."""
    try:
        value = msgpack.unpackb(data, raw=False) if isinstance(data, bytes) else json.loads(data)
    except ValueError as exc:
        raise BadFrame(f"undecodable frame: {exc}") from None
    if not isinstance(value, dict) or "type" not in value:
        raise BadFrame(f"expected a map with a type, got {value!r:.120}")
    return value


class Channel(Generic[T]):
    """A bounded queue of events for one reader, which a writer can end, with an error
    or without: the reader gets every event put before the end, then the error (or the
    end of iteration). `put` waits while the queue is full."""

    def __init__(self, maxsize: int) -> None:
        if maxsize < 1:
            raise ValueError(f"queue size must be >= 1, got {maxsize}")
        self.maxsize = maxsize
        self.items: collections.deque[T] = collections.deque()
        self.ended = False
        self.error: BaseException | None = None
        self._readable = asyncio.Event()
        self._writable = asyncio.Event()
        self._writable.set()

    async def put(self, item: T) -> None:
        while len(self.items) >= self.maxsize and not self.ended:
            self._writable.clear()
            await self._writable.wait()
        if not self.ended:
            self.items.append(item)
            self._readable.set()

    def end(self, error: BaseException | None = None) -> None:
        """No more events: the reader gets those queued, then `error` (or the end)."""
        if not self.ended:
            self.ended = True
            self.error = error
        self._readable.set()
        self._writable.set()

    async def get(self) -> T:
        """The next event; raises the error the channel was ended with, or
        StopAsyncIteration when it ended without one."""
        while not self.items:
            if self.ended:
                if self.error is not None:
                    raise self.error
                raise StopAsyncIteration
            self._readable.clear()
            await self._readable.wait()
        item = self.items.popleft()
        self._writable.set()
        return item
