"""marketstream's Python client: a typed asyncio stream of ticks and bars that reconnects
by itself, recovers what it missed, and accounts for every seq (docs/client.md).

    async with Client("ws://127.0.0.1:8000/ws/v1/stream", key=KEY) as client:
        await client.subscribe(["AAPL", "MSFT"], throttle_ms=250)
        async for tick in client.ticks():
            print(tick.symbol, tick.seq, tick.price, tick.conflated)

It needs websockets and msgpack only, and imports nothing else of marketstream: it can be
used apart from the hub. `SyncClient` is the same without async; `python -m
marketstream.client` is a terminal client (it needs `rich`).
"""

from marketstream.client.accounting import SymbolStats
from marketstream.client.backoff import Backoff
from marketstream.client.client import Client, Subscription
from marketstream.client.errors import (
    ClientError,
    Closed,
    ConnectionLost,
    KeyOverLimit,
    KeyRevoked,
    MessageTooBig,
    PolicyViolation,
    Refused,
    RequestError,
)
from marketstream.client.events import (
    Ack,
    Bar,
    Connected,
    Disconnected,
    Event,
    Reset,
    Tick,
    Unsubscribed,
    Welcome,
)
from marketstream.client.sync import SyncClient
from marketstream.client.wire import DEFAULT_URL

__all__ = [
    "DEFAULT_URL",
    "Ack",
    "Backoff",
    "Bar",
    "Client",
    "ClientError",
    "Closed",
    "Connected",
    "ConnectionLost",
    "Disconnected",
    "Event",
    "KeyOverLimit",
    "KeyRevoked",
    "MessageTooBig",
    "PolicyViolation",
    "Refused",
    "RequestError",
    "Reset",
    "Subscription",
    "SymbolStats",
    "SyncClient",
    "Tick",
    "Unsubscribed",
    "Welcome",
]
