"""What the dashboard costs in Chromium: CPU and frame rate with 50 symbols at every tick.

    python -m loadtest.page_bench [--rates 250,1000,2500] [--seconds 10] [--symbols 50]

Starts a hub and a feed of `--symbols` generated symbols on the Redis at 127.0.0.1:6379
(a prefix of its own), opens the dashboard in Debian's headless Chromium (Playwright, as
the browser tests do) with a watchlist of every symbol at throttle 0 ("every tick"), then,
for each feed rate in turn (ticks/s over all symbols), lets it settle and measures for
`--seconds`:

- frames/s: requestAnimationFrame callbacks counted in the page, and the longest gap
  between two (a gap past 50 ms is a frame the eye notices);
- main thread busy: Chromium's own task time (CDP `Performance.getMetrics`, TaskDuration;
  its script, layout and style parts) over the wall time, as a fraction of one core;
- the page's own work: time in its message handler and its frame callback (performance.now()
  around each, kept by the page in `window.marketstream.stats().perf`);
- Chromium's CPU: user + system seconds of every Chromium process (browser, renderer, GPU
  and utility processes: psutil) over the wall time;
- ticks/s received by the page, and its frames (WebSocket messages) per second.

Prints one JSON line (the runs), then a readable table. Needs the dev extra (Playwright).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psutil
from playwright.sync_api import CDPSession, Page, sync_playwright

from loadtest.services import (
    LOOPBACK,
    Service,
    delete_prefix,
    free_port,
    redis_ping,
    service_env,
    start_feed,
    start_hub,
    wait_until,
)

REDIS_URL = f"redis://{LOOPBACK}:6379/0"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]
SETTLE_S = 3.0
COUNT_FRAMES = """() => {
  const m = (window.__bench = { frames: 0, last: performance.now(), maxGap: 0, janks: 0 });
  const tick = (now) => {
    const gap = now - m.last;
    m.frames += 1; m.last = now;
    if (gap > m.maxGap) m.maxGap = gap;
    if (gap > 50) m.janks += 1;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
}"""


def chromium_processes() -> list[psutil.Process]:
    return [p for p in psutil.Process().children(recursive=True) if "chrom" in p.name().lower()]


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for process in processes:
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except psutil.NoSuchProcess:
            pass
    return total


def metrics(cdp: CDPSession) -> dict[str, float]:
    return {m["name"]: float(m["value"]) for m in cdp.send("Performance.getMetrics")["metrics"]}


def sample(page: Page, cdp: CDPSession) -> dict[str, Any]:
    state = page.evaluate(
        "(() => { const s = window.marketstream.stats(); const b = window.__bench;"
        " return {perf: s.perf, rows: Object.keys(s.symbols).length,"
        " received: Object.values(s.symbols).reduce((n, x) => n + (x.received || 0), 0),"
        " frames: b.frames, maxGap: b.maxGap, janks: b.janks}; })()"
    )
    return {"at": time.monotonic(), "cpu": cpu_seconds(chromium_processes()), "cdp": metrics(cdp), **state}


def measure(page: Page, cdp: CDPSession, seconds: float) -> dict[str, float]:
    page.evaluate("(() => { window.__bench.maxGap = 0; window.__bench.janks = 0; })()")
    a = sample(page, cdp)
    page.wait_for_timeout(seconds * 1000)
    b = sample(page, cdp)
    wall = b["at"] - a["at"]

    def busy(name: str) -> float:
        return (b["cdp"].get(name, 0.0) - a["cdp"].get(name, 0.0)) / wall

    return {
        "rows": b["rows"],
        "seconds": round(wall, 2),
        "ticks_per_s": round((b["received"] - a["received"]) / wall, 1),
        "messages_per_s": round((b["perf"]["messages"] - a["perf"]["messages"]) / wall, 1),
        "fps": round((b["frames"] - a["frames"]) / wall, 1),
        "max_frame_gap_ms": round(b["maxGap"], 1),
        "frames_over_50ms": b["janks"],
        "main_thread_busy": round(busy("TaskDuration"), 3),
        "script": round(busy("ScriptDuration"), 3),
        "layout_and_style": round(busy("LayoutDuration") + busy("RecalcStyleDuration"), 3),
        "page_handlers": round((b["perf"]["busyMs"] - a["perf"]["busyMs"]) / 1000 / wall, 3),
        "chromium_cpu": round((b["cpu"] - a["cpu"]) / wall, 3),
    }


def run(rates: list[float], seconds: float, symbols: int) -> list[dict[str, Any]]:
    if not redis_ping(6379):
        sys.exit("page_bench needs Redis on 127.0.0.1:6379")
    if not Path(CHROMIUM).exists():
        sys.exit("page_bench needs Debian's Chromium (apt-get install -y chromium)")
    prefix = f"pagebench-{uuid.uuid4().hex[:8]}"
    log_dir = Path(tempfile.mkdtemp(prefix=f"{prefix}-"))
    env = service_env(REDIS_URL, prefix, {"LOG_LEVEL": "WARNING"}, clean=True)
    services: list[Service] = []
    results = []
    try:
        hub = start_hub(free_port(), 1, env, log_dir)
        services.append(hub)
        wait_until(lambda: _healthy(hub.base), 30, hub, "the hub")
        names = [f"SYM{i:04d}" for i in range(symbols)]
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            context = browser.new_context(viewport={"width": 1366, "height": 860})
            # the watchlist is in localStorage before the page's first script runs
            watchlist = {"lists": [{"name": "Bench", "symbols": names}], "active": 0, "throttles": {}}
            stored = json.dumps(json.dumps(watchlist))
            context.add_init_script(f"localStorage.setItem('marketstream.watchlists.v1', {stored})")
            page = context.new_page()
            for rate in rates:
                feed = start_feed(symbols, rate, env, log_dir)
                services.append(feed)
                time.sleep(1.0)
                if page.url == "about:blank":
                    page.goto(f"{hub.base}/")
                    page.wait_for_function("window.marketstream.stats().status === 'live'", timeout=15_000)
                    page.evaluate(COUNT_FRAMES)
                    cdp = page.context.new_cdp_session(page)
                    cdp.send("Performance.enable")
                page.wait_for_timeout(SETTLE_S * 1000)
                results.append({"rate": rate, "symbols": symbols, **measure(page, cdp, seconds)})
                feed.stop()
                services.remove(feed)
            browser.close()
    finally:
        for service in reversed(services):
            service.stop()
        delete_prefix(REDIS_URL, prefix)
        shutil.rmtree(log_dir, ignore_errors=True)
    return results


def _healthy(base: str) -> bool:
    from loadtest.catalog import healthy

    return healthy(base)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="250,1000,2500", help="feed rates to measure, ticks/s over all symbols")
    parser.add_argument("--seconds", type=float, default=10.0, help="measured seconds per rate")
    parser.add_argument("--symbols", type=int, default=50)
    args = parser.parse_args(argv)
    results = run([float(r) for r in args.rates.split(",")], args.seconds, args.symbols)
    print(json.dumps(results))
    columns = [
        ("rate", "feed ticks/s"),
        ("ticks_per_s", "page ticks/s"),
        ("messages_per_s", "frames/s in"),
        ("fps", "fps"),
        ("max_frame_gap_ms", "max gap ms"),
        ("frames_over_50ms", ">50ms"),
        ("main_thread_busy", "main busy"),
        ("script", "script"),
        ("layout_and_style", "layout+style"),
        ("page_handlers", "page JS"),
        ("chromium_cpu", "Chromium CPU"),
    ]
    print(" | ".join(title for _, title in columns))
    for result in results:
        print(" | ".join(str(result[key]) for key, _ in columns))


if __name__ == "__main__":
    main()
