"""/metrics adds up across workers: `serve --workers 2` against Redis, real clients on both
workers, and a scrape (answered by either worker) whose totals equal what the clients got."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import time
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from loadtest.services import free_port, start_hub
from tests.support.client import StreamClient, stream
from tests.support.processes import REDIS_URL, Processes, catalog, http_get, service_env, wait_healthy

SYMBOLS = ["AAPL", "MSFT", "EUR/USD"]
SYNC_S = 0.2  # MARKETSTREAM_METRICS_SYNC_S of the hub under test
MAX_CLIENTS = 40  # connections opened, at most, until both workers hold some


def scrape(port: int) -> dict[str, float]:
    """Every sample of GET /metrics: `name` or `name{label="value",...}` -> value."""
    status, _, text = http_get(port, "/metrics")
    assert status == 200, text
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def per_worker_connections(directory: Path, scratch: Path) -> dict[int, float]:
    """marketstream_connections of each live worker, read from its own file of the
    multiprocess directory (copied alone into a scratch directory and collected there)."""
    found = {}
    for path in directory.glob("gauge_livesum_*.db"):
        pid = int(path.stem.rsplit("_", 1)[1])
        alone = scratch / str(pid)
        alone.mkdir(exist_ok=True)
        shutil.copy(path, alone / path.name)
        registry = CollectorRegistry()
        MultiProcessCollector(registry, str(alone))
        found[pid] = registry.get_sample_value("marketstream_connections") or 0.0
    return found


async def test_two_workers_metrics_equal_what_the_clients_received(
    procs: Processes, prefix: str, tmp_path: Path
) -> None:
    # a first, short feed puts the symbols in the catalog
    first = procs.feed(prefix, SYMBOLS, 100, "--ticks", "30", "--seed", "1", wait=False)
    assert await asyncio.to_thread(first.wait, 30) == 0, first.log()
    env = service_env(
        REDIS_URL,
        prefix,
        {"MARKETSTREAM_METRICS_SYNC_S": str(SYNC_S), "MARKETSTREAM_LATENCY_SAMPLE_EVERY": "1"},
        clean=True,
    )
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # serve makes a fresh one for its two workers
    hub = procs.add(start_hub(free_port(), 2, env, procs.log_dir))
    wait_healthy(hub)
    found = re.search(r"summed through (\S+) \(PROMETHEUS_MULTIPROC_DIR\)", hub.log())
    assert found, f"serve --workers 2 did not set up a multiprocess directory:\n{hub.log()}"
    directory = Path(found.group(1))

    async with contextlib.AsyncExitStack() as stack:
        clients: list[StreamClient] = []
        # connect until both workers hold connections (the kernel picks the worker that accepts)
        while len(clients) < MAX_CLIENTS:
            for _ in range(4):
                client = await stack.enter_async_context(stream(hub.ws_url, "msgpack"))
                await client.subscribe(SYMBOLS, snapshot=False)
                clients.append(client)
            await asyncio.sleep(SYNC_S * 3)
            counts = per_worker_connections(directory, tmp_path)
            if len(counts) == 2 and all(counts.values()):
                break
        else:
            raise AssertionError(f"{MAX_CLIENTS} connections all went to one worker: {counts}")
        assert sum(counts.values()) == len(clients), counts

        feed = procs.feed(prefix, SYMBOLS, 300, "--ticks", "600", "--seed", "2", wait=False)
        assert await asyncio.to_thread(feed.wait, 60) == 0, feed.log()
        last = catalog(hub.port)
        for client in clients:
            for symbol in SYMBOLS:
                await client.wait_seq(symbol, last[symbol]["seq"])
        await asyncio.sleep(SYNC_S * 5)  # every worker has synced since the last tick was sent

        metrics = scrape(hub.port)
        tick_frames = [f for c in clients for f in c.frames if f.type == "ticks"]
        ticks = sum(len(f.message["ticks"]) for f in tick_frames)
        frames = sum(len(c.frames) for c in clients)
        assert metrics["marketstream_connections"] == len(clients)
        assert metrics["marketstream_subscriptions"] == len(clients) * len(SYMBOLS)
        assert metrics["marketstream_ticks_sent_total"] == ticks, (metrics["marketstream_ticks_sent_total"], ticks)
        assert metrics["marketstream_frames_sent_total"] == frames, (metrics["marketstream_frames_sent_total"], frames)
        # each worker receives each tick once (600 and the opening's one per symbol), whatever its subscribers
        assert metrics["marketstream_ticks_received_total"] == 2 * (600 + len(SYMBOLS))
        assert metrics['marketstream_handshakes_total{outcome="accepted"}'] == len(clients)
        assert metrics["marketstream_bytes_sent_total"] > 0
        # with MARKETSTREAM_LATENCY_SAMPLE_EVERY=1 every flush samples one of its frames
        samples = metrics["marketstream_tick_latency_seconds_count"]
        assert 0 < samples <= len(tick_frames), (samples, len(tick_frames))
        assert 0 < metrics["marketstream_tick_latency_seconds_sum"] / samples < 5.0
        # the same answer from whichever worker takes the scrape
        for _ in range(5):
            assert scrape(hub.port)["marketstream_ticks_sent_total"] == ticks

    # the clients are gone: the connections gauge of each worker goes back to 0
    deadline = time.monotonic() + 10
    while scrape(hub.port)["marketstream_connections"] != 0:
        assert time.monotonic() < deadline, "marketstream_connections stays above 0 with no client"
        await asyncio.sleep(SYNC_S)
    assert scrape(hub.port)["marketstream_frames_sent_total"] == frames, "a closed connection's counts stay"


async def test_a_dead_workers_connections_leave_the_gauge_and_its_counts_stay(
    procs: Processes, prefix: str, tmp_path: Path
) -> None:
    env = service_env(REDIS_URL, prefix, {"MARKETSTREAM_METRICS_SYNC_S": str(SYNC_S)}, clean=True)
    hub = procs.add(start_hub(free_port(), 2, env, procs.log_dir))
    wait_healthy(hub)
    found = re.search(r"summed through (\S+) \(PROMETHEUS_MULTIPROC_DIR\)", hub.log())
    assert found, hub.log()
    directory = Path(found.group(1))
    async with contextlib.AsyncExitStack() as stack:
        for _ in range(8):
            await stack.enter_async_context(stream(hub.ws_url, "msgpack"))
        await asyncio.sleep(SYNC_S * 3)
        assert scrape(hub.port)["marketstream_connections"] == 8
        victim, held = max(per_worker_connections(directory, tmp_path).items(), key=lambda item: item[1])
        os.kill(victim, signal.SIGKILL)  # uvicorn starts another worker in its place
        deadline = time.monotonic() + 15
        while (metrics := scrape(hub.port))["marketstream_connections"] != 8 - held:
            assert time.monotonic() < deadline, f"still {metrics['marketstream_connections']} connections"
            await asyncio.sleep(SYNC_S)
        assert metrics['marketstream_handshakes_total{outcome="accepted"}'] == 8, "the dead worker's counts stay"
