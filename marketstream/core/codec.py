"""Codecs: how server messages become frames, and how client frames become requests.

Two codecs, chosen per connection at the handshake: ``msgpack`` (binary frames) and
``json`` (text frames). Tick data is never encoded here: a ``ticks`` or ``snapshot``
frame is built by joining ticks that the publisher already encoded.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import Any, Literal

import msgpack
import orjson

from marketstream.core.bars import EncodedBar
from marketstream.core.tick import EncodedTick

CodecName = Literal["msgpack", "json"]
CODECS: tuple[CodecName, ...] = ("msgpack", "json")
SUBPROTOCOLS: dict[str, CodecName] = {
    "marketstream.v1.msgpack": "msgpack",
    "marketstream.v1.json": "json",
}


class BadFrame(ValueError):
    """A client frame that does not decode to a value in the frame's codec."""


def _msgpack_array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 0x10000:
        return b"\xdc" + struct.pack(">H", n)
    return b"\xdd" + struct.pack(">I", n)


_MSGPACK_PREFIX = {
    kind: b"\x82" + msgpack.packb("type") + msgpack.packb(kind) + msgpack.packb("ticks")
    for kind in ("ticks", "snapshot")
}
_JSON_PREFIX = {kind: b'{"type":"' + kind.encode() + b'","ticks":[' for kind in ("ticks", "snapshot")}
_MSGPACK_BARS = b"\x82" + msgpack.packb("type") + msgpack.packb("bars") + msgpack.packb("bars")
_JSON_BARS = b'{"type":"bars","bars":['


class Codec:
    """Encodes server messages for one codec. Stateless; use `CODEC[name]`."""

    def __init__(self, name: CodecName) -> None:
        self.name: CodecName = name
        self.binary = name == "msgpack"

    def message(self, message: dict[str, Any]) -> bytes:
        """Encode a control message (welcome, ack, error...)."""
        if self.binary:
            return msgpack.packb(message, use_bin_type=True)
        return orjson.dumps(message)

    def ticks(self, ticks: Sequence[EncodedTick], kind: str = "ticks") -> bytes:
        """Build a ``ticks`` (or ``snapshot``) frame by joining pre-encoded ticks."""
        if self.binary:
            return b"".join((_MSGPACK_PREFIX[kind], _msgpack_array_header(len(ticks)), *[t.msgpack for t in ticks]))
        return _JSON_PREFIX[kind] + b",".join([t.json for t in ticks]) + b"]}"

    def bars(self, bars: Sequence[EncodedBar]) -> bytes:
        """Build a ``bars`` frame by joining bars encoded once per process."""
        if self.binary:
            return b"".join((_MSGPACK_BARS, _msgpack_array_header(len(bars)), *[b.msgpack for b in bars]))
        return _JSON_BARS + b",".join([b.json for b in bars]) + b"]}"


CODEC: dict[CodecName, Codec] = {name: Codec(name) for name in CODECS}


def decode_request(text: str | None, data: bytes | None) -> Any:
    """Decode a client frame: JSON in a text frame, msgpack in a binary frame.

    Either codec is accepted whatever the connection's encoding (PROTOCOL.md).
    Raises BadFrame when the payload does not decode.
    """
    try:
        if text is not None:
            return orjson.loads(text)
        if data is not None:
            return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # orjson and msgpack raise assorted errors on hostile input
        raise BadFrame(f"{type(exc).__name__}: {exc}") from exc
    raise BadFrame("empty frame")
