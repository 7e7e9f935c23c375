"""The seed tutorial's pattern, applied to ticks: the benchmarks' baseline, not our design.

One channel per consumer, `group_add` per subscribed symbol, one layer message per tick
per consumer, and `json.dumps` per consumer per tick. It speaks enough of PROTOCOL.md
(JSON frames, welcome, subscribe/unsubscribe acks, ticks) for the load tests to drive
it. Served by `loadtest.seed.asgi`.
"""

from __future__ import annotations

import json
from typing import Any

import msgpack
from channels.generic.websocket import AsyncWebsocketConsumer

from marketstream.adapters.transport import GROUP_PREFIX, group_name
from marketstream.core.symbols import normalize
from marketstream.core.tick import now_ns


class SeedConsumer(AsyncWebsocketConsumer):
    async def connect(self) -> None:
        self.symbols: set[str] = set()
        subprotocols = self.scope.get("subprotocols") or []
        await self.accept("marketstream.v1.json" if "marketstream.v1.json" in subprotocols else None)
        await self.send(text_data=json.dumps({"type": "welcome", "protocol": 1, "session": self.channel_name,
                                              "encoding": "json", "server_time": now_ns(), "limits": {}}))  # fmt: skip

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        request = json.loads(text_data) if text_data is not None else msgpack.unpackb(bytes_data or b"\xc0")
        op = request.get("op")
        symbols = [s for s in (normalize(x) for x in request.get("symbols", [])) if s]
        if op == "subscribe":
            for symbol in symbols:
                await self.channel_layer.group_add(group_name(GROUP_PREFIX, symbol), self.channel_name)
                self.symbols.add(symbol)
        elif op == "unsubscribe":
            for symbol in symbols:
                await self.channel_layer.group_discard(group_name(GROUP_PREFIX, symbol), self.channel_name)
                self.symbols.discard(symbol)
        ack = {"type": "ack", "id": request.get("id"), "op": op, "symbols": symbols, "throttle_ms": 0, "rejected": {}}
        await self.send(text_data=json.dumps(ack))

    async def tick(self, event: dict[str, Any]) -> None:
        tick = msgpack.unpackb(event["m"])
        await self.send(text_data=json.dumps({"type": "ticks", "ticks": [tick]}))

    async def disconnect(self, code: int) -> None:
        for symbol in self.symbols:
            await self.channel_layer.group_discard(group_name(GROUP_PREFIX, symbol), self.channel_name)
