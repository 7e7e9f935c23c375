"""`python -m loadtest.idlemem`: what an idle connection holds in the hub, by allocating file.

Starts Redis's feed (``runfeed --generated 200 --rate 10``, under a prefix of its own, on
the Redis at 127.0.0.1:6379) and one hub (``marketstream.serve``) under tracemalloc, then
client processes (asyncio, the raw client of loadtest.asyncws) that open ``--connections``
connections, each subscribing to ``--symbols`` symbols (msgpack, no throttle), and keep
them open. The hub dumps a tracemalloc snapshot (after a `gc.collect()`) on SIGUSR1: once
after ``--warmup`` connections were opened and closed, once with every connection open.
Prints the difference per connection, by file (and with ``--lines``, by line), and the
RSS growth per connection. ``--pythonpath DIR`` runs the hub and feed from another tree
(the "before" of a change; the hub's own modules are checked to come from there).
tracemalloc slows the hub: handshakes take a few times longer.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import tracemalloc
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import psutil

from loadtest.asyncws import OP_BINARY, OP_PING, OP_PONG, OP_TEXT, FrameParser, check_response, frame, handshake_request
from loadtest.catalog import fetch_catalog, healthy
from loadtest.clients import raise_nofile
from loadtest.services import LOOPBACK, ROOT, Service, delete_prefix, feed_argv, free_port, hub_env, wait_until

REDIS_URL = "redis://127.0.0.1:6379/0"
HUB = r"""
import gc, os, signal, sys, tracemalloc
tracemalloc.start(int(os.environ["IDLEMEM_FRAMES"]))
dumps = []
def dump(signum, frame):
    gc.collect()
    tracemalloc.take_snapshot().dump(f"{os.environ['IDLEMEM_DUMP']}.{len(dumps)}")
    dumps.append(1)
signal.signal(signal.SIGUSR1, dump)
import marketstream
print("idlemem: marketstream from", marketstream.__file__, flush=True)
from marketstream.serve import main
main(["--port", sys.argv[1], "--log-level", "warning"])
"""


class Idle(asyncio.Protocol):
    """One connection: upgrade, `welcome`, `subscribe`, `ack`; then it only answers pings."""

    def __init__(self, request: bytes, accept: bytes, symbols: list[str]) -> None:
        self.request, self.accept, self.symbols = request, accept, symbols
        self.parser = FrameParser()
        self.head = b""
        self.upgraded = False
        self.transport: asyncio.Transport | None = None
        self.acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(self.request)

    def data_received(self, data: bytes) -> None:
        assert self.transport is not None
        if not self.upgraded:
            self.head += data
            end = self.head.find(b"\r\n\r\n")
            if end < 0:
                return
            check_response(self.head[:end], self.accept)
            data, self.head, self.upgraded = self.head[end + 4 :], b"", True
        for opcode, payload in self.parser.feed(data):
            if opcode in (OP_TEXT, OP_BINARY) and not self.acked.done():
                kind = json.loads(payload).get("type")
                if kind == "welcome":
                    request = {"op": "subscribe", "id": 1, "symbols": self.symbols}
                    self.transport.write(frame(OP_TEXT, json.dumps(request).encode()))
                elif kind == "ack":
                    self.acked.set_result(None)
            elif opcode == OP_PING:
                self.transport.write(frame(OP_PONG, payload))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.acked.done():
            self.acked.set_exception(exc or ConnectionResetError("closed"))


async def hold(pipe: Connection, port: int, specs: list[list[str]]) -> None:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(100)
    held: list[asyncio.Transport] = []

    async def one(symbols: list[str]) -> None:
        async with gate:
            request, accept = handshake_request(LOOPBACK, port, "/ws/v1/stream?encoding=json")
            transport, proto = await loop.create_connection(lambda: Idle(request, accept, symbols), LOOPBACK, port)
            await asyncio.wait_for(proto.acked, 60)
            held.append(transport)

    results = await asyncio.gather(*(one(s) for s in specs), return_exceptions=True)
    errors = [r for r in results if isinstance(r, BaseException)]
    pipe.send({"open": len(held), "errors": len(errors), "first": repr(errors[0]) if errors else None})
    await loop.run_in_executor(None, pipe.recv)  # until told to close
    for transport in held:
        transport.close()
    await asyncio.sleep(0.5)
    pipe.send("closed")


def client_main(pipe: Connection, port: int, specs: list[list[str]]) -> None:
    raise_nofile()
    asyncio.run(hold(pipe, port, specs))


def open_all(port: int, specs: list[list[str]], procs: int) -> tuple[list[Any], list[Connection], list[dict[str, Any]]]:
    ctx = multiprocessing.get_context("spawn")
    processes, pipes = [], []
    for i in range(procs):
        parent, child = ctx.Pipe()
        process = ctx.Process(target=client_main, args=(child, port, specs[i::procs]), daemon=True)
        process.start()
        processes.append(process)
        pipes.append(parent)
    return processes, pipes, [pipe.recv() for pipe in pipes]


def close_all(processes: list[Any], pipes: list[Connection]) -> None:
    for pipe in pipes:
        pipe.send("close")
    for pipe in pipes:
        with contextlib.suppress(EOFError):
            pipe.recv()
    for process in processes:
        process.join(5)


def snapshot(pid: int, path: Path, index: int) -> tracemalloc.Snapshot:
    target = Path(f"{path}.{index}")
    os.kill(pid, signal.SIGUSR1)
    deadline = time.monotonic() + 120
    size = -1
    while time.monotonic() < deadline:  # the dump is written, then stops growing
        if target.exists() and target.stat().st_size == size and size > 0:
            break
        size = target.stat().st_size if target.exists() else -1
        time.sleep(0.5)
    return tracemalloc.Snapshot.load(str(target))


def start(name: str, argv: list[str], env: dict[str, str], tree: Path, logs: Path) -> Service:
    """`argv` in its own session, in `tree` (the hub's code comes from there: ``-c`` and
    ``manage.py`` put the working directory first on sys.path), output to a log."""
    log_path = logs / f"{name}.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            argv, cwd=tree, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
    return Service(name, process, log_path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.idlemem", description=__doc__.split("\n")[0])
    p.add_argument("--connections", type=int, default=10_000)
    p.add_argument("--symbols", type=int, default=5, help="subscriptions per connection (of 200)")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--client-procs", type=int, default=2)
    p.add_argument("--top", type=int, default=15)
    p.add_argument("--lines", action="store_true", help="also the top lines (tracebacks of 1 frame)")
    p.add_argument("--pythonpath", help="run the hub and the feed from this tree")
    p.add_argument("--json-out")
    args = p.parse_args(argv)
    raise_nofile()
    logs = Path(tempfile.mkdtemp(prefix="idlemem-"))
    prefix = f"idlemem-{os.getpid()}"
    env = hub_env(REDIS_URL, prefix, 0.0, False)
    env["MARKETSTREAM_MAX_REQUESTS_PER_S"] = "1000"
    if args.pythonpath:
        env["PYTHONPATH"] = args.pythonpath
    env.update(IDLEMEM_DUMP=str(logs / "snap"), IDLEMEM_FRAMES="1")
    port = free_port()
    services = []
    try:
        tree = Path(args.pythonpath or ROOT)
        feed = start("feed", feed_argv(200, 10), env, tree, logs)
        services.append(feed)
        hub = start("hub", [sys.executable, "-c", HUB, str(port)], env, tree, logs)
        services.append(hub)
        base = f"http://{LOOPBACK}:{port}"
        wait_until(lambda: healthy(base), 60.0, hub, "the hub's /healthz")
        origin = f"marketstream from {tree.resolve()}/marketstream/__init__.py"
        assert origin in hub.log(), f"the hub's code is not from {tree}: {hub.log()[:300]}"
        wait_until(lambda: len(fetch_catalog(base)) >= 200, 60.0, feed, "the feed's symbols")
        symbols = sorted(fetch_catalog(base))[:200]
        rng = random.Random(1)
        procs, pipes, replies = open_all(port, [rng.sample(symbols, args.symbols) for _ in range(args.warmup)], 1)
        close_all(procs, pipes)
        time.sleep(2)
        before = snapshot(hub.pid, logs / "snap", 0)
        rss_before = psutil.Process(hub.pid).memory_info().rss
        specs = [rng.sample(symbols, args.symbols) for _ in range(args.connections)]
        started = time.monotonic()
        procs, pipes, replies = open_all(port, specs, args.client_procs)
        opened = sum(r["open"] for r in replies)
        print(f"idlemem: {opened} open in {time.monotonic() - started:.1f} s; {replies}", file=sys.stderr)
        time.sleep(2)
        rss_after = psutil.Process(hub.pid).memory_info().rss
        after = snapshot(hub.pid, logs / "snap", 1)
        close_all(procs, pipes)
        stats = after.compare_to(before, "filename")
        total = sum(s.size_diff for s in stats)
        result: dict[str, Any] = {
            "connections": opened,
            "traced_kb_per_connection": round(total / opened / 1024, 2),
            "rss_kb_per_connection": round((rss_after - rss_before) / opened / 1024, 2),
            "by_file": [
                {
                    "file": s.traceback[0].filename.split("site-packages/")[-1],
                    "bytes_per_connection": round(s.size_diff / opened),
                    "blocks_per_connection": round(s.count_diff / opened, 2),
                }
                for s in stats[: args.top]
            ],
        }
        if args.lines:
            result["by_line"] = [
                {
                    "line": f"{s.traceback[0].filename.split('site-packages/')[-1]}:{s.traceback[0].lineno}",
                    "bytes_per_connection": round(s.size_diff / opened),
                }
                for s in after.compare_to(before, "lineno")[: args.top * 2]
            ]
        print(json.dumps(result))
        print(f"\n{opened} idle connections x {args.symbols} subscriptions")
        traced, rss = result["traced_kb_per_connection"], result["rss_kb_per_connection"]
        print(f"traced (tracemalloc): {traced} KB per connection; RSS: {rss} KB")
        for row in result["by_file"]:
            print(f"  {row['bytes_per_connection']:>7} B  {row['blocks_per_connection']:>6} blocks  {row['file']}")
        for row in result.get("by_line", []):
            print(f"  {row['bytes_per_connection']:>7} B  {row['line']}")
        if args.json_out:
            Path(args.json_out).write_text(json.dumps(result, indent=1) + "\n")
        return 0
    finally:
        for service in reversed(services):
            service.stop()
        delete_prefix(REDIS_URL, prefix)


if __name__ == "__main__":
    sys.exit(main())
