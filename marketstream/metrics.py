"""Prometheus metrics of this hub process, read from the hub when scraped."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from consumers.gate import Gate
from marketstream.core.closes import Close
from marketstream.core.hub import Hub


class HubCollector(Collector):
    def __init__(self, hub: Hub | None) -> None:
        self.hub = hub

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        hub = self.hub
        conns = list(hub.connections) if hub else []
        yield GaugeMetricFamily("marketstream_connections", "Open WebSocket connections", value=len(conns))
        yield GaugeMetricFamily(
            "marketstream_subscriptions",
            "Subscriptions over all connections",
            value=sum(len(c.subscriptions) for c in conns),
        )
        yield GaugeMetricFamily(
            "marketstream_symbols_joined", "Symbols this hub receives", value=len(hub.membership.joined) if hub else 0
        )
        yield GaugeMetricFamily(
            "marketstream_outbox_ticks", "Ticks pending in outboxes", value=sum(len(c.outbox) for c in conns)
        )
        yield CounterMetricFamily(
            "marketstream_ticks_received",
            "Ticks received from the channel layer",
            value=hub.stats.ticks_received if hub else 0,
        )
        yield CounterMetricFamily(
            "marketstream_ticks_sent",
            "Ticks sent to clients",
            value=(hub.stats.ticks_sent_closed if hub else 0) + sum(c.ticks_sent for c in conns),
        )
        yield CounterMetricFamily(
            "marketstream_frames_sent",
            "Frames sent to clients",
            value=(hub.stats.frames_closed if hub else 0) + sum(c.frames for c in conns),
        )
        yield CounterMetricFamily(
            "marketstream_slow_closes",
            "Connections closed with 1013 as slow",
            value=hub.stats.closes[Close.TRY_AGAIN_LATER] if hub else 0,
        )
        yield CounterMetricFamily(
            "marketstream_layer_errors", "Channel-layer receive errors", value=hub.stats.transport_errors if hub else 0
        )
        stats = hub.stats if hub else None
        history = hub.history.stats if hub else None
        for name, text, value in (
            ("marketstream_resets", "New epochs seen: a symbol's seq restarted", stats.resets if stats else 0),
            ("marketstream_ticks_filled", "Ticks of gaps in what the hub received, read from history",
             stats.ticks_filled if stats else 0),
            ("marketstream_ticks_lost", "Seqs the hub never received that history no longer held",
             stats.ticks_lost if stats else 0),
            ("marketstream_recoveries_served", "Symbols recovered from history after `since`",
             history.served if history else 0),
            ("marketstream_recoveries_refused", "Symbols answered recovered: false",
             history.refused if history else 0),
            ("marketstream_ticks_recovered", "Ticks delivered from history by recovery",
             history.ticks if history else 0),
            ("marketstream_history_reads", "History round trips of recovery (shared by requests)",
             history.reads if history else 0),
            ("marketstream_recoveries_from_memory", "Symbols recovered from ticks kept since an earlier read",
             history.from_memory if history else 0),
        ):  # fmt: skip
            yield CounterMetricFamily(name, text, value=value)


class GateCollector(Collector):
    """Admissions of the gate (consumers.gate): handshakes and API requests by outcome."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        outcomes = CounterMetricFamily(
            "marketstream_admissions",
            "Handshakes and API requests by outcome (admitted, refused, over_key_limit, hub_full), "
            "and connections closed by revocation or expiry (revoked)",
            labels=["outcome"],
        )
        for outcome, count in sorted(self.gate.counts.items()):
            outcomes.add_metric([outcome], count)
        yield outcomes
        yield GaugeMetricFamily(
            "marketstream_grants", "Key and session grants in this hub's memory", value=len(self.gate.book.grants)
        )


def render(hub: Hub | None, gate: Gate | None = None) -> bytes:
    registry = CollectorRegistry()
    registry.register(HubCollector(hub))
    if gate is not None:
        registry.register(GateCollector(gate))
    return generate_latest(registry)


async def serve(hub: Hub, gate: Gate, host: str, port: int) -> asyncio.Server:
    """A listener of its own for `GET /metrics` (MARKETSTREAM_METRICS_PORT), on the hub's
    event loop: bind it to an address that only the monitoring network reaches."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5.0)
            path = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
            if request.startswith(b"GET ") and path.split(b"?")[0] == b"/metrics":
                status, kind, body = b"200 OK", CONTENT_TYPE_LATEST.encode(), render(hub, gate)
            else:
                status, kind, body = b"404 Not Found", b"text/plain", b"only GET /metrics here\n"
            head = b"HTTP/1.1 %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
            writer.write(head % (status, kind, len(body)) + body)
            await writer.drain()
        except (TimeoutError, OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        finally:
            writer.close()

    return await asyncio.start_server(answer, host, port)
