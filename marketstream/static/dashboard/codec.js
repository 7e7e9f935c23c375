/**
 * The wire codec: the page speaks `marketstream.v1.msgpack` (binary frames, both ways)
 * with @msgpack/msgpack, vendored in ../vendor/msgpack/ as its one-file build, which
 * index.html loads before this module (`globalThis.MessagePack`).
 */
const { Decoder, encode: pack } = globalThis.MessagePack;

export const SUBPROTOCOL = "marketstream.v1.msgpack";

const decoder = new Decoder(); // one decoder, reused: it caches map keys ("symbol", "price", ...)

/** A server frame (an ArrayBuffer) as a message. Ints past 2^53 (`ts`, ns) come as Numbers. */
export function decode(data) {
  return decoder.decode(new Uint8Array(data));
}

/** A request as the bytes of a binary frame. */
export function encode(request) {
  return pack(request);
}
