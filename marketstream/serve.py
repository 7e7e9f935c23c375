"""`python -m marketstream.serve`: uvicorn with the hub's settings.

Equivalent to ``uvicorn marketstream.asgi:application --ws marketstream.rawsend:RawSendProtocol
--ws-per-message-deflate false --ws-max-size MAX_MESSAGE_BYTES``: uvicorn's websockets-sansio
protocol with the hub's raw-frame send path (marketstream/rawsend.py), compression off for
the tick stream (about 3x framing CPU and ~64 KiB per connection) and frames over the limit
closed with 1009 before they are buffered. Plain ``--ws websockets-sansio`` works too: the
hub then sends every frame through the ASGI send.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import tempfile
from pathlib import Path

import uvicorn

log = logging.getLogger("marketstream.serve")

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's multiprocess mode (docs/operations.md)


def metrics_directory(workers: int) -> tuple[Path | None, bool]:
    """Set up prometheus-client's multiprocess directory for this run, before any worker
    starts: the operator's PROMETHEUS_MULTIPROC_DIR, emptied of the files of an earlier run
    (its `*.db` files only), or with `workers` > 1 a new temporary directory (removed at
    exit). None with one worker and no directory set: the worker keeps its own registry.
    Returns the directory and whether it was made here (and is to be removed).
    The workers inherit the variable, so every one of them writes there and each scrape
    answers for all of them."""
    given = os.environ.get(MULTIPROC_ENV, "").strip()
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for old in path.glob("*.db"):
            old.unlink()
        return path, False
    if workers <= 1:
        return None, False
    path = Path(tempfile.mkdtemp(prefix="marketstream-metrics-"))
    os.environ[MULTIPROC_ENV] = str(path)
    return path, True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve the marketstream hub with uvicorn.")
    parser.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", "1")))
    parser.add_argument("--log-level", default=os.environ.get("UVICORN_LOG_LEVEL", "info"))
    args = parser.parse_args(argv)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "marketstream.settings")
    if args.workers > 1 and not os.environ.get("REDIS_URL"):
        parser.error("several workers need REDIS_URL: on the embedded default each worker would have its own feed")
    from marketstream.settings import MARKETSTREAM  # the same parsing and default as the hub's

    max_bytes: int = MARKETSTREAM["MAX_MESSAGE_BYTES"]
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if MARKETSTREAM["ANONYMOUS"]:
        log.warning(
            "anonymous access is ON (MARKETSTREAM_ANONYMOUS=true): clients without a key may read %s",
            MARKETSTREAM["ANONYMOUS_SYMBOLS"],
        )
    else:
        log.info("a key is required (MARKETSTREAM_ANONYMOUS is off): `python manage.py createkey --name NAME`")
    directory, made = metrics_directory(args.workers)
    if directory is not None:
        log.info("metrics of %d worker(s) summed through %s (%s)", args.workers, directory, MULTIPROC_ENV)
    try:
        run(args, max_bytes)
    finally:
        if made and directory is not None:  # the workers are gone: uvicorn.run waited for them
            shutil.rmtree(directory, ignore_errors=True)


def run(args: argparse.Namespace, max_bytes: int) -> None:
    uvicorn.run(
        "marketstream.asgi:application",
        host=args.host,
        port=args.port,
        workers=args.workers,
        ws="marketstream.rawsend:RawSendProtocol",
        ws_per_message_deflate=False,
        ws_max_size=max_bytes,
        lifespan="on",
        log_level=args.log_level,
        access_log=False,
    )


if __name__ == "__main__":
    main()
