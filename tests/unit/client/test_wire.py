"""Frames in both encodings, and the bounded event queue."""

from __future__ import annotations

import asyncio

import msgpack
import pytest

from marketstream.client.wire import BadFrame, Channel, decode, encode


def test_requests_and_frames_in_both_encodings() -> None:
    request = {"op": "subscribe", "symbols": ["AAPL"]}
    packed = encode(request, "msgpack")
    assert isinstance(packed, bytes) and msgpack.unpackb(packed) == request
    assert encode(request, "json") == '{"op":"subscribe","symbols":["AAPL"]}'
    assert decode(msgpack.packb({"type": "pong", "id": 1})) == {"type": "pong", "id": 1}
    assert decode('{"type": "pong"}') == {"type": "pong"}
    for bad in (b"\xc1", "[1]", '{"no": "type"}'):
        with pytest.raises(BadFrame):
            decode(bad)


async def test_the_channel_is_bounded_and_ends_after_what_it_holds() -> None:
    channel: Channel[int] = Channel(2)
    await channel.put(1)
    await channel.put(2)
    third = asyncio.ensure_future(channel.put(3))
    await asyncio.sleep(0.01)
    assert not third.done(), "full: the writer waits"
    assert await channel.get() == 1
    await asyncio.wait_for(third, 1)
    channel.end(RuntimeError("gone"))
    assert [await channel.get(), await channel.get()] == [2, 3]
    with pytest.raises(RuntimeError, match="gone"):
        await channel.get()


async def test_a_channel_ended_without_error_stops_iteration() -> None:
    channel: Channel[int] = Channel(1)
    reader = asyncio.ensure_future(channel.get())
    await asyncio.sleep(0.01)
    channel.end()
    with pytest.raises(StopAsyncIteration):
        await reader
