"""`python -m marketstream.client`: a terminal client of the hub.

    python -m marketstream.client AAPL MSFT --throttle-ms 250 [--key K] [--url U]
    python -m marketstream.client AAPL --json                 # one tick per line, for pipes
    python -m marketstream.client AAPL MSFT --record ticks.ndjson   # what `runfeed --replay` reads

The live table needs `rich` (`pip install 'marketstream[client]'`). The key may also come
from MARKETSTREAM_KEY (a key on the command line is visible to other users of the
machine). Ctrl-C ends it cleanly, exit status 0; a key or close the hub refuses ends it
with status 1 and the reason on stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import urllib.parse
import urllib.request
from typing import IO, Any

from marketstream.client.board import COLUMNS, Board
from marketstream.client.client import Client
from marketstream.client.errors import ClientError
from marketstream.client.events import Event, Tick
from marketstream.client.wire import DEFAULT_URL, ENCODINGS

REFRESH = 0.25  # seconds between redraws of the table


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m marketstream.client", description="Stream ticks from a marketstream hub."
    )
    p.add_argument("symbols", nargs="+", help="symbols to subscribe to (AAPL EUR/USD ...)")
    p.add_argument("--url", default=DEFAULT_URL, help=f"the hub's stream endpoint (default {DEFAULT_URL})")
    p.add_argument("--key", default=os.environ.get("MARKETSTREAM_KEY"), help="API key (default: $MARKETSTREAM_KEY)")
    p.add_argument("--throttle-ms", type=int, default=0, help="at most one tick per symbol every N ms (default 0)")
    p.add_argument("--encoding", choices=ENCODINGS, default="msgpack")
    p.add_argument("--json", action="store_true", help="print one tick per line as JSON instead of the table")
    p.add_argument("--record", metavar="FILE", help="append every tick to FILE as NDJSON (what replay reads)")
    args = p.parse_args(argv)
    if args.throttle_ms < 0:
        p.error(f"--throttle-ms must be >= 0, got {args.throttle_ms}")
    return args


def references(url: str, key: str | None) -> dict[str, float]:
    """Each symbol's `reference` price from the catalog, when the hub gives them ({} otherwise)."""
    parts = urllib.parse.urlsplit(url)
    scheme = "https" if parts.scheme == "wss" else "http"
    request = urllib.request.Request(f"{scheme}://{parts.netloc}/api/v1/symbols")
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=3) as answer:
            entries = json.load(answer).get("symbols", [])
    except (OSError, ValueError, AttributeError):
        return {}
    return {e["symbol"]: float(e["reference"]) for e in entries if isinstance(e.get("reference"), (int, float))}


async def stream(args: argparse.Namespace, stop: asyncio.Event, out: IO[str], record: IO[str] | None) -> None:
    """Subscribe, then show the table (or print lines) until `stop` is set."""
    async with Client(args.url, key=args.key, encoding=args.encoding) as client:
        ack = await client.subscribe(args.symbols, throttle_ms=args.throttle_ms)
        for symbol, code in ack.rejected.items():
            print(f"{symbol}: rejected ({code})", file=sys.stderr)
        if not ack.symbols:
            raise ClientError("no symbol was accepted")
        if args.json:
            await until(stop, lines(client, out, record))
        else:
            refs = await asyncio.to_thread(references, args.url, args.key)
            await until(stop, table(client, Board(list(ack.symbols), refs), record))


async def until(stop: asyncio.Event, work: Any) -> None:
    """Run `work` until it ends or `stop` is set; what it raised is raised."""
    task = asyncio.ensure_future(work)
    stopper = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if not task.done():
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def write(record: IO[str] | None, tick: Tick) -> None:
    if record is not None:
        record.write(json.dumps(tick.as_dict(), separators=(",", ":")) + "\n")


async def lines(client: Client, out: IO[str], record: IO[str] | None) -> None:
    async for tick in client.ticks():
        out.write(json.dumps(tick.as_dict(), separators=(",", ":")) + "\n")
        out.flush()
        write(record, tick)


async def table(client: Client, board: Board, record: IO[str] | None) -> None:
    from rich.console import Group
    from rich.live import Live
    from rich.table import Table
    from rich.text import Text

    def render() -> Group:
        grid = Table(*COLUMNS, title=f"marketstream {client.url}", title_justify="left")
        for row in board.lines(client.stats):
            grid.add_row(*row)
        return Group(grid, Text(f"{board.status} | {board.ticks} ticks | {board.reconnects} reconnects"))

    async def consume() -> None:
        event: Event
        async for event in client:
            board.apply(event)
            if isinstance(event, Tick):
                write(record, event)

    reader = asyncio.ensure_future(consume())
    try:
        with Live(render(), refresh_per_second=1 / REFRESH, transient=False) as live:
            while not reader.done():
                await asyncio.wait([reader], timeout=REFRESH)
                live.update(render())
        reader.result()
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader


async def main_async(args: argparse.Namespace, record: IO[str] | None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stream(args, stop, sys.stdout, record)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        with contextlib.ExitStack() as files:
            record = files.enter_context(open(args.record, "a", encoding="utf-8")) if args.record else None
            asyncio.run(main_async(args, record))
    except OSError as exc:
        if not isinstance(exc, BrokenPipeError):
            print(f"marketstream.client: {exc}", file=sys.stderr)
            return 1
        with contextlib.suppress(OSError):  # --json into a pipe that closed (| head)
            sys.stdout.close()
    except ClientError as exc:
        print(f"marketstream.client: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
