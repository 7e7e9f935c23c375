"""Frames on the wire: the bytes of a server WebSocket frame, built once per frame.

A server's frames are never masked (RFC 6455, 5.1), so a frame with a given payload is
the same bytes on every connection that gets it. `FrameWriter` builds a frame's header
once and, within one flush round, hands the same bytes object to every connection whose
frame is one and the same tick (most frames when each connection gets a few ticks a
second per symbol): the join, the header and the allocation are paid once per tick, not
once per subscriber. No I/O: the edge's raw writer (`Connection.write_now`) writes them.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

from marketstream.core.codec import Codec
from marketstream.core.tick import EncodedTick

MAX_FRAME_BYTES = 1_000_000  # a tick frame's payload stops growing past this (the rest waits for the next)

_FIN_TEXT = 0x81
_FIN_BINARY = 0x82
_SHORT = struct.Struct("!BBH")
_LONG = struct.Struct("!BBQ")


def frame(payload: bytes, binary: bool) -> bytes:
    """One final, unmasked server frame (binary, or text for the JSON codec) carrying `payload`."""
    first = _FIN_BINARY if binary else _FIN_TEXT
    n = len(payload)
    if n < 126:
        return bytes((first, n)) + payload
    if n < 0x10000:
        return _SHORT.pack(first, 126, n) + payload
    return _LONG.pack(first, 127, n) + payload


def payload_size(data: bytes) -> int:
    """The length of the payload of `data`, one frame built by `frame` (its header is 2, 4
    or 10 bytes, by the payload's length)."""
    n = len(data)
    return n - (2 if n < 128 else 4 if n < 0x10004 else 10)


class FrameWriter:
    """Builds frames; one-tick frames are shared by the connections of one flush round.

    Call `new_round()` when a flush round starts and when it ends: a shared frame lives
    no longer than its round (it keeps its tick alive meanwhile), so the cache never
    holds more than one round's ticks.
    """

    __slots__ = ("_shared", "built", "reused")

    def __init__(self) -> None:
        self._shared: dict[tuple[EncodedTick, bool], bytes] = {}
        self.built = 0  # one-tick frames built (for the benchmark notes and tests)
        self.reused = 0  # one-tick frames handed out again

    def new_round(self) -> None:
        if self._shared:
            self._shared = {}

    def ticks(self, codec: Codec, ticks: Sequence[EncodedTick]) -> bytes:
        """The frame of a ``ticks`` message carrying `ticks` in `codec`."""
        if len(ticks) == 1:
            key = (ticks[0], codec.binary)
            data = self._shared.get(key)
            if data is None:
                data = self._shared[key] = frame(codec.ticks(ticks), codec.binary)
                self.built += 1
            else:
                self.reused += 1
            return data
        return frame(codec.ticks(ticks), codec.binary)


RAW_SEND = "marketstream.raw_send"
"""The ASGI extension (in `scope["extensions"]`) of a server that takes already-framed
frames: its value is a dict whose ``"write"`` is a `Write` (`core/connection.py`):
``write(frame) -> bool`` writes one whole frame at once, or returns False (writing
nothing) when the WebSocket is not open or the socket is paused by its flow control.
``python -m marketstream.serve`` offers it (marketstream/rawsend.py)."""
