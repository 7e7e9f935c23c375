"""`python -m loadtest.sendfloor`: what one small frame costs the sender on this machine,
with no hub around it: the floor under the dashboard's CPU per delivered tick.

A server process (uvloop) accepts `--connections` TCP connections on loopback from a
reader process (asyncio, one protocol per connection that counts and drops what it
gets, as the benchmark's clients do with frames), then, `--rounds` times a second,
writes one `--size`-byte frame to each of `--per-round` connections (a different slice
each round, as a hub's flush after a feed batch), with `transport.write` (uvloop, as
the hub and the bare server do) or `socket.send` (`--send`; what a full socket does not
take goes to the transport, which sends it when the socket takes more). It reports the
server's CPU per frame, user and system apart (getrusage over `--seconds`, and until
the transports have sent what they buffered), and the share of the bytes written that
the reader got (`received_ratio`: the reader waits for them all, until 5 s pass without
one).

The dashboard scenario, for comparison: 200 connections, 100 feed batches a second,
about 80 frames of about 100 bytes after each (7,900 frames a second):

    python -m loadtest.sendfloor --connections 200 --rounds 100 --per-round 80 --size 110
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import resource
import socket
import sys
import time
from multiprocessing.connection import Connection as Pipe

READER_QUIET = 5.0  # seconds without a byte before the reader stops waiting for what was sent
FLUSH_TIMEOUT = 30.0  # seconds the server waits for its transports to send what they buffered


class Sink(asyncio.Protocol):
    """A reader's connection: counts the bytes it gets."""

    received = 0

    def data_received(self, data: bytes) -> None:
        Sink.received += len(data)


def reader(port: int, connections: int, pipe: Pipe) -> None:
    async def run() -> None:
        loop = asyncio.get_running_loop()
        transports = []
        for _ in range(connections):
            transport, _ = await loop.create_connection(Sink, "127.0.0.1", port)
            transports.append(transport)
        pipe.send("connected")
        expected = await loop.run_in_executor(None, pipe.recv)  # the bytes sent, once the server is done
        seen, quiet_since = -1, time.monotonic()
        while Sink.received < expected and time.monotonic() - quiet_since < READER_QUIET:
            if Sink.received != seen:
                seen, quiet_since = Sink.received, time.monotonic()
            await asyncio.sleep(0.01)
        pipe.send(Sink.received)
        for transport in transports:
            transport.close()

    asyncio.run(run())


def cpu() -> tuple[float, float]:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime, usage.ru_stime


async def serve(args: argparse.Namespace) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    accepted: list[asyncio.Transport] = []
    ready = asyncio.Event()

    class Accepted(asyncio.Protocol):
        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport) or hasattr(transport, "write")
            sock = transport.get_extra_info("socket")
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            accepted.append(transport)  # type: ignore[arg-type]
            if len(accepted) == args.connections:
                ready.set()

    server = await loop.create_server(Accepted, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    here, there = multiprocessing.Pipe()
    proc = multiprocessing.get_context("spawn").Process(
        target=reader, args=(port, args.connections, there), daemon=True
    )  # daemon: ended if the server fails, instead of waiting for it forever
    proc.start()
    await loop.run_in_executor(None, here.recv)
    await asyncio.wait_for(ready.wait(), 30)
    frame = b"\x82" + bytes((args.size - 2,)) + b"x" * (args.size - 2) if args.size < 127 else b"x" * args.size
    socks = [t.get_extra_info("socket") for t in accepted]
    fds = [socket.socket(fileno=s.fileno()) for s in socks] if args.send else []
    n, frames, start = len(accepted), 0, 0
    period = 1 / args.rounds

    def send(i: int) -> None:
        """`socket.send`; what the socket does not take goes to the connection's transport,
        which sends it when the socket takes more, and so do the connection's next frames
        while the transport holds any (in order)."""
        transport = accepted[i]
        if transport.get_write_buffer_size():
            transport.write(frame)
            return
        try:
            sent = fds[i].send(frame)
        except BlockingIOError:
            sent = 0
        if sent < len(frame):
            transport.write(frame[sent:])

    u0, s0 = cpu()
    t0 = time.monotonic()
    next_round = t0
    while time.monotonic() - t0 < args.seconds:
        if args.send:
            for i in range(start, start + args.per_round):
                send(i % n)
        else:
            for i in range(start, start + args.per_round):
                accepted[i % n].write(frame)
        frames += args.per_round
        start = (start + args.per_round) % n
        next_round += period
        await asyncio.sleep(max(0.0, next_round - time.monotonic()))
    flushed_by = time.monotonic() + FLUSH_TIMEOUT  # what the transports buffered is sent, and counted
    while time.monotonic() < flushed_by:
        if not any(t.get_write_buffer_size() for t in accepted):
            break
        await asyncio.sleep(0.001)
    u1, s1 = cpu()
    elapsed = time.monotonic() - t0
    here.send(frames * len(frame))
    received = await loop.run_in_executor(None, here.recv)
    for fd in fds:
        fd.detach()
    proc.join(10)
    server.close()
    return {
        "frames_per_s": round(frames / elapsed, 1),
        "user_us_per_frame": round((u1 - u0) / frames * 1e6, 2),
        "system_us_per_frame": round((s1 - s0) / frames * 1e6, 2),
        "cpu_us_per_frame": round((u1 - u0 + s1 - s0) / frames * 1e6, 2),
        "received_ratio": round(received / (frames * len(frame)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--connections", type=int, default=200)
    p.add_argument("--rounds", type=float, default=100.0, help="write rounds a second")
    p.add_argument("--per-round", type=int, default=80, help="frames (connections) written per round")
    p.add_argument("--size", type=int, default=110, help="bytes per frame")
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--send", action="store_true", help="socket.send instead of uvloop's transport.write")
    args = p.parse_args(argv)
    import uvloop

    result = uvloop.run(serve(args))
    print(json.dumps({"args": vars(args), **result}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
