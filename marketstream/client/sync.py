"""`SyncClient`: the client for scripts and notebooks, without async.

The same `Client`, run on an event loop in a background thread; each method waits for
its result. One thread reads the events (iteration or `next`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine, Iterable, Iterator
from typing import Any, TypeVar

from marketstream.client.accounting import SymbolStats
from marketstream.client.client import Client
from marketstream.client.events import Ack, Event, Tick, Welcome
from marketstream.client.wire import DEFAULT_URL

T = TypeVar("T")


class SyncClient:
    """A connected client; `SyncClient(url, key=..., encoding=...)` takes `Client`'s
    options and connects (raising what `Client.connect` raises). Use it with `with`, or
    call `close()`.

        with SyncClient(url) as client:
            client.subscribe(["AAPL"])
            for tick in client.ticks(timeout=5):
                print(tick.symbol, tick.price)
    """

    def __init__(self, url: str = DEFAULT_URL, **options: Any) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="marketstream-client", daemon=True)
        self._thread.start()
        try:
            self.client: Client = self._call(self._make(url, options))
            self.welcome: Welcome = self._call(self.client.connect())
        except BaseException:
            self._stop()
            raise

    @staticmethod
    async def _make(url: str, options: dict[str, Any]) -> Client:
        return Client(url, **options)

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def subscribe(
        self, symbols: Iterable[str], *, throttle_ms: int = 0, bars: Iterable[str] | None = None, snapshot: bool = True
    ) -> Ack:
        """`Client.subscribe`."""
        return self._call(self.client.subscribe(list(symbols), throttle_ms=throttle_ms, bars=bars, snapshot=snapshot))

    def unsubscribe(self, symbols: Iterable[str]) -> Ack:
        """`Client.unsubscribe`."""
        return self._call(self.client.unsubscribe(list(symbols)))

    def next(self, timeout: float | None = None) -> Event:
        """The next event, waiting at most `timeout` seconds (TimeoutError). Raises
        StopIteration at the end of the stream, or the error that ended it."""
        future = asyncio.run_coroutine_threadsafe(self.client.next(), self._loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            if future.cancel():  # nothing was taken
                raise TimeoutError(f"no event within {timeout} s") from None
            return future.result()
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Event]:
        return self.events()

    def events(self, timeout: float | None = None) -> Iterator[Event]:
        """Every event until the stream ends, or until none came for `timeout` seconds."""
        while True:
            try:
                yield self.next(timeout)
            except (StopIteration, TimeoutError):
                return

    def ticks(self, timeout: float | None = None) -> Iterator[Tick]:
        """Only the ticks, until the stream ends or no event came for `timeout` seconds."""
        for event in self.events(timeout):
            if isinstance(event, Tick):
                yield event

    @property
    def stats(self) -> dict[str, SymbolStats]:
        """`Client.stats` (read it between events: the loop thread updates it)."""
        return self.client.stats

    def close(self) -> None:
        """Close the connection and stop the loop thread."""
        if self._loop.is_closed():
            return
        try:
            self._call(self.client.close(), timeout=10)
        finally:
            self._stop()

    def _call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def _stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        if not self._thread.is_alive():
            self._loop.close()
