"""`python -m loadtest.bare`: a bare `websockets` broadcast server, the benchmark's second baseline.

What a new user would write without Django or Channels: one process, websockets' asyncio
server, redis-py's pub/sub, and for each tick one encoding of its frame and
`websockets.broadcast()` to the connections that subscribed to its symbol. It speaks as
much of PROTOCOL.md as the benchmark's clients need (`welcome`, `subscribe` -> `ack`,
`ticks` frames of one tick each, `GET /healthz`, `GET /api/v1/symbols`): no snapshots,
throttles, limits, conflation, recovery or slow-client policy.

It reads what the feeds publish with one Redis (the benchmarks run one): each tick on
the pub/sub channel ``<prefix>__group__tick.<SYMBOL>`` (the pub/sub channel layer's
name of the symbol's group, `group_name`), as the msgpack message of publish.lua
(``s`` symbol, ``m`` the tick in msgpack, ``j`` in JSON); the catalog from the store's
keys. Environment: REDIS_URL, MARKETSTREAM_PREFIX (as the feed's).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import uuid
from collections import defaultdict
from http import HTTPStatus

import msgpack
import orjson
import redis.asyncio as aioredis
import websockets
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response

from marketstream.adapters.transport import GROUP_PREFIX, group_name
from marketstream.core.codec import CODEC, SUBPROTOCOLS

TICKS_MSGPACK = b"\x82" + msgpack.packb("type") + msgpack.packb("ticks") + msgpack.packb("ticks") + b"\x91"
TICKS_JSON = b'{"type":"ticks","ticks":['


class Bare:
    """The server's state: subscribers per symbol, and the Redis pub/sub they read."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self.redis = aioredis.from_url(redis_url)
        self.pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
        self.prefix = prefix
        self.subscribers: dict[str, dict[bool, set[ServerConnection]]] = defaultdict(
            lambda: {True: set(), False: set()}
        )
        self.joined: set[str] = set()
        self.channels: dict[bytes, str] = {}

    def channel(self, symbol: str) -> str:
        return f"{self.prefix}__group__{group_name(GROUP_PREFIX, symbol)}"

    async def join(self, symbol: str) -> None:
        if symbol not in self.joined:
            self.joined.add(symbol)
            channel = self.channel(symbol)
            self.channels[channel.encode()] = symbol
            await self.pubsub.subscribe(channel)

    async def receive(self) -> None:
        """Each tick: its frame encoded once per codec in use, broadcast to its subscribers.
        Starts after a first subscription (`listen` returns at once without one)."""
        async for message in self.pubsub.listen():
            if message["type"] != "message":
                continue
            data = msgpack.unpackb(message["data"], raw=False)
            if data.get("type") != "tick":
                continue
            subs = self.subscribers.get(data["s"])
            if not subs:
                continue
            if subs[True]:
                websockets.broadcast(subs[True], TICKS_MSGPACK + data["m"])
            if subs[False]:
                websockets.broadcast(subs[False], TICKS_JSON + data["j"] + b"]}")

    async def catalog(self) -> bytes:
        async with self.redis.pipeline(transaction=False) as pipe:
            pipe.smembers(f"{self.prefix}:catalog")
            pipe.hgetall(f"{self.prefix}:snapshot")
            members, snaps = await pipe.execute()
        symbols = []
        for raw in sorted(members):
            snap = snaps.get(raw)
            symbols.append({"symbol": raw.decode(), "last": msgpack.unpackb(snap, raw=False) if snap else None})
        return orjson.dumps({"symbols": symbols})

    async def http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.partition("?")[0]
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return None
        if path == "/healthz":
            body, status = b'{"status":"ok"}', HTTPStatus.OK
        elif path == "/api/v1/symbols":
            body, status = await self.catalog(), HTTPStatus.OK
        else:
            body, status = b'{"error":"not found"}', HTTPStatus.NOT_FOUND
        headers = Headers({"Content-Type": "application/json", "Content-Length": str(len(body))})
        return Response(status.value, status.phrase, headers, body)

    async def handler(self, ws: ServerConnection) -> None:
        offered = ws.subprotocol
        binary = SUBPROTOCOLS.get(offered or "", "msgpack") == "msgpack"
        if "encoding=json" in (ws.request.path if ws.request else ""):
            binary = False
        codec = CODEC["msgpack" if binary else "json"]
        await ws.send(
            codec.message({"type": "welcome", "protocol": 1, "session": uuid.uuid4().hex[:16], "encoding": codec.name})
        )
        mine: list[str] = []
        try:
            async for frame in ws:
                request = orjson.loads(frame) if isinstance(frame, str) else msgpack.unpackb(frame, raw=False)
                if request.get("op") != "subscribe":
                    continue
                symbols = [s for s in request.get("symbols", []) if isinstance(s, str)]
                for symbol in symbols:
                    await self.join(symbol)
                    self.subscribers[symbol][binary].add(ws)
                    mine.append(symbol)
                await ws.send(codec.message({"type": "ack", "id": request.get("id"), "symbols": symbols}))
        except websockets.ConnectionClosed:
            pass
        finally:
            for symbol in mine:
                self.subscribers[symbol][binary].discard(ws)


async def main_async(host: str, port: int) -> None:
    bare = Bare(os.environ["REDIS_URL"], os.environ.get("MARKETSTREAM_PREFIX", "ms"))
    await bare.pubsub.subscribe(f"{bare.prefix}__bare__")  # listen() needs one subscription
    receiver = asyncio.create_task(bare.receive())
    async with serve(
        bare.handler,
        host,
        port,
        process_request=bare.http,
        compression=None,
        subprotocols=list(SUBPROTOCOLS),  # type: ignore[arg-type]
        max_size=65536,
    ) as server:
        with contextlib.suppress(asyncio.CancelledError):
            await server.serve_forever()
    receiver.cancel()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="A bare websockets broadcast server (benchmark baseline).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    try:
        import uvloop

        uvloop.run(main_async(args.host, args.port))
    except ImportError:  # pragma: no cover
        asyncio.run(main_async(args.host, args.port))


if __name__ == "__main__":
    main()
