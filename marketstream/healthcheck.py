"""`python -m marketstream.healthcheck`: is the hub (or feed) in this container healthy? Exit 0 or 1.

The HEALTHCHECK of docker/Dockerfile, run every few seconds in the container, so it uses the
standard library only (no Django, no settings: it starts in tens of milliseconds):

    python -m marketstream.healthcheck                      # GET http://127.0.0.1:$PORT/healthz
    python -m marketstream.healthcheck --port 9101 --path /metrics   # a feed's metrics listener

Contract, for `/healthz` (the default): healthy (exit 0) when the hub answers 200 with
`status` `ok` or `degraded` (some shard down: the hub still serves the others' symbols, and
the proxy keeps it too). Unhealthy (exit 1) for anything else: 503 `unavailable` (no shard
serves, or the hub's receiver stopped), no answer within `--timeout`, a refused connection,
a body that is not the hub's. For any other `--path`, healthy means HTTP 200. One line
saying why goes to stdout (Docker keeps it in `docker inspect`'s health log).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request

HEALTHZ = "/healthz"
HEALTHY_STATES = ("ok", "degraded")


def check(url: str, timeout: float) -> tuple[bool, str]:
    """GET `url`: (healthy, why). A URL whose path is /healthz must answer 200 with a healthy
    `status`; any other URL must answer 200. Never raises for network or HTTP errors."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status, body = int(response.status), response.read(65536)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(65536)
    except (OSError, ValueError) as exc:  # refused, timed out, unresolvable, malformed URL
        return False, f"{url}: no answer ({type(exc).__name__}: {exc})"
    if urllib.parse.urlsplit(url).path != HEALTHZ:
        return status == 200, f"{url}: HTTP {status}"
    try:
        state = json.loads(body).get("status")
    except (ValueError, AttributeError):
        return False, f"{url}: HTTP {status}, not the hub's /healthz answer: {body[:120]!r}"
    return status == 200 and state in HEALTHY_STATES, f"{url}: HTTP {status}, status {state!r}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Exit 0 when the hub answers /healthz as healthy, else 1.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT") or 8000), help="default: $PORT, else 8000"
    )
    parser.add_argument("--path", default=HEALTHZ, help="default /healthz; another path needs only HTTP 200")
    parser.add_argument("--timeout", type=float, default=3.0, help="seconds to wait for the answer")
    args = parser.parse_args(argv)
    host = f"[{args.host}]" if ":" in args.host else args.host
    healthy, why = check(f"http://{host}:{args.port}{args.path}", args.timeout)
    print(("healthy: " if healthy else "unhealthy: ") + why)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
