"""A listener of its own for `GET /metrics`: the hub's MARKETSTREAM_METRICS_PORT and the
feed's `runfeed --metrics-port`.

It runs on the caller's event loop (so `render` runs there too, beside the code whose
counters it reads) and answers `GET /metrics` with `render()`, anything else with 404.
No credential is asked: bind it to an address that only the monitoring network reaches.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from prometheus_client import CONTENT_TYPE_LATEST

REQUEST_TIMEOUT = 5.0  # seconds a client has to send its request head


async def serve(render: Callable[[], bytes], host: str, port: int) -> asyncio.Server:
    """Start answering on `host`:`port`; close the returned server to stop.

    The port is bound with SO_REUSEPORT: each worker of `serve --workers N` binds it (the
    second would fail otherwise, and uvicorn stop the hub), the kernel hands each scrape to
    one of them, and any one answers for all (multiprocess mode, adapters/prometheus.py)."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), REQUEST_TIMEOUT)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] == b"/metrics":
                status, kind, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), render()
            else:
                status, kind, body = b"404 Not Found", b"text/plain", b"only GET /metrics here\n"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            writer.write(head % (status, kind, len(body)) + body)
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port, reuse_port=True)
