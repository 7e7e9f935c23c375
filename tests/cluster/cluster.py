"""A small marketstream cluster on one machine: every part on its own host (network namespace).

    root namespace (the test, its clients) ── bridge ──┬── proxy   HAProxy, docker/haproxy.cfg, :8000
                                                       ├── hub1    python -m marketstream.serve :8000
                                                       ├── hub2    python -m marketstream.serve :8000
                                                       ├── feed    manage.py runfeed
                                                       ├── redis0  redis-server :6379 (shard 0)
                                                       ├── redis1  redis-server :6379 (shard 1) [+ sentinel]
                                                       └── redis1r replica of redis1 + sentinel (Sentinel shard)

Hubs and the feed run the tree's code with the test's own interpreter (`sys.executable`,
PYTHONPATH = the tree). Sentinels are `redis-server --sentinel` (Debian's redis-server is
enough: no redis-sentinel package needed), one beside each Redis of the cluster, so that a
killed primary leaves a majority. Every process is started with `ip netns exec` in its own
process group with its log in the cluster's log directory; `close()` stops them all and
removes the hosts, and is safe to call after any failure.
"""

from __future__ import annotations

import csv
import io
import shutil
import socket
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis

from loadtest.catalog import CatalogError, fetch_catalog, get_json, last_seqs
from loadtest.services import ROOT, Service, redis_ping, service_env, spawn, wait_until
from tests.cluster.netns import Host, Network
from tests.support.processes import Processes

HUB_PORT = 8000
PROXY_PORT = 8000
REDIS_PORT = 6379
SENTINEL_PORT = 26379
READY = 40.0  # seconds a process may take to be ready: hubs import Django on a shared, loaded machine
HAPROXY_CFG = ROOT / "docker" / "haproxy.cfg"
# the proxy's health checks in the tests: every 300 ms, DOWN after 2 failures
CHECK_INTER, CHECK_FALL = "300ms", "2"
SENTINEL_DOWN_AFTER_MS, SENTINEL_FAILOVER_TIMEOUT_MS = 1000, 3000


@dataclass
class Shard:
    """One shard: a Redis host, and for a Sentinel-managed shard its replica host and service name."""

    index: int
    primary: Host
    replica: Host | None = None
    service: str = ""
    sentinels: list[Host] = field(default_factory=list)

    def url(self) -> str:
        """This shard's part of REDIS_URL (docs/shards.md: plain or `redis+sentinel://`)."""
        if self.replica is None:
            return f"redis://{self.primary.addr}:{REDIS_PORT}/0"
        first, *more = self.sentinels
        query = "&".join(f"sentinel={h.addr}:{SENTINEL_PORT}" for h in more)
        return f"redis+sentinel://{first.addr}:{SENTINEL_PORT}/{self.service}" + (f"?{query}" if query else "")


class Cluster:
    """Builds the hosts and processes; `close()` removes them. See the module docstring."""

    def __init__(
        self, shards: int = 1, sentinel: bool = False, hub_env: dict[str, str] | None = None, data: Path | None = None
    ) -> None:
        """`shards` Redis shards, the last Sentinel-managed with `sentinel`; `hub_env`: more environment of
        the hubs; `data`: a data directory (a migrated key database) each hub gets a copy of."""
        self.net = Network()
        self.procs = Processes()
        self.log_dir = self.procs.log_dir
        self.prefix = f"mscl{self.net.run}"
        self.services: dict[str, Service] = {}
        self.hub_env = hub_env or {}
        self.shards: list[Shard] = []
        self._shard_count = shards
        self._sentinel = sentinel
        self._data = data

    # -- building ----------------------------------------------------------------------

    def start(self, symbols: Sequence[str], rate: float) -> None:
        """Start everything: Redis shards (the last one Sentinel-managed when asked), two hubs,
        the proxy, and a feed of `symbols` at `rate` ticks/s; wait until the proxy routes to
        both hubs and every symbol has a tick."""
        for i in range(self._shard_count):
            self._start_shard(i, sentinel=self._sentinel and i == self._shard_count - 1)
        for shard in self.shards:
            for host in shard.sentinels:
                self._start_sentinel(host, shard)
        for role in ("hub1", "hub2"):
            self.start_hub(role, wait=False)
        self._start_proxy()
        for role in ("hub1", "hub2"):
            self.wait_hub(role)
        self.wait_proxy_up("hub1", "hub2")
        self.start_feed(symbols, rate)

    @property
    def redis_url(self) -> str:
        return ",".join(s.url() for s in self.shards)

    def host(self, role: str) -> Host:
        return self.net.hosts[role] if role in self.net.hosts else self.net.add(role)

    def _spawn(self, role: str, host: Host, argv: list[str], env: dict[str, str]) -> Service:
        service = self.procs.add(spawn(role, host.argv(*argv), env, self.log_dir))
        self.services[role] = service
        return service

    def _redis(self, role: str, host: Host, *args: str) -> Service:
        """A redis-server on `host`; its files (a replica's copy of the primary) in the log directory."""
        argv = ["redis-server", "--port", str(REDIS_PORT), "--bind", "0.0.0.0", "--protected-mode", "no"]
        argv += ["--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", str(self.log_dir), *args]
        service = self._spawn(role, host, argv, {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin"})
        wait_until(lambda: redis_ping(REDIS_PORT, host.addr), READY, service, f"{role} on {host.addr}")
        return service

    def _start_shard(self, index: int, sentinel: bool) -> None:
        primary = self.host(f"redis{index}")
        # a replica's first sync at once (Redis waits 5 s by default for more replicas to share it)
        self._redis(primary.role, primary, "--repl-diskless-sync-delay", "0")
        shard = Shard(index, primary)
        if sentinel:
            host = shard.replica = self.host(f"redis{index}r")
            shard.service = f"shard{index}"
            replica = self._redis(host.role, host, "--replicaof", primary.addr, str(REDIS_PORT))
            wait_until(lambda: replica_synced(host), READY, replica, f"{host.role}'s first sync")
            # a sentinel beside each Redis of the cluster: three, two survive a lost host
            shard.sentinels = [primary, shard.replica, *(s.primary for s in self.shards[:1])]
            if len(shard.sentinels) < 3:
                shard.sentinels.append(self.host("witness"))
        self.shards.append(shard)

    def _start_sentinel(self, host: Host, shard: Shard) -> None:
        conf = self.log_dir / f"sentinel-{host.role}.conf"
        quorum = len(shard.sentinels) // 2 + 1
        conf.write_text(
            f"port {SENTINEL_PORT}\nbind 0.0.0.0\nprotected-mode no\ndir {self.log_dir}\n"
            f"sentinel monitor {shard.service} {shard.primary.addr} {REDIS_PORT} {quorum}\n"
            f"sentinel down-after-milliseconds {shard.service} {SENTINEL_DOWN_AFTER_MS}\n"
            f"sentinel failover-timeout {shard.service} {SENTINEL_FAILOVER_TIMEOUT_MS}\n"
            f"sentinel parallel-syncs {shard.service} 1\n"
        )
        role = f"sentinel-{host.role}"
        service = self._spawn(role, host, ["redis-server", str(conf), "--sentinel"], {"PATH": "/usr/bin:/bin"})
        wait_until(lambda: redis_ping(SENTINEL_PORT, host.addr), READY, service, f"{role} on {host.addr}")

    def _python_env(self, extra: dict[str, str]) -> dict[str, str]:
        env = service_env(self.redis_url, self.prefix, {**self.hub_env, **extra}, clean=True)
        env["PYTHONPATH"] = str(ROOT)
        return env

    def start_hub(self, role: str, wait: bool = True) -> Service:
        """Start (or start again) the hub on host `role` ("hub1", "hub2")."""
        host = self.host(role)
        data = self.log_dir / f"{role}-data"
        if self._data is not None and not data.exists():
            shutil.copytree(self._data, data)
        data.mkdir(exist_ok=True)
        # the name clients use is the proxy's: the hubs allow only it (the proxy's checks of /healthz need none)
        allowed = self.host("proxy").addr
        env = self._python_env({"ALLOWED_HOSTS": allowed, "MARKETSTREAM_DATA_DIR": str(data)})
        argv = [sys.executable, "-m", "marketstream.serve", "--host", "0.0.0.0", "--port", str(HUB_PORT)]
        service = self._spawn(role, host, [*argv, "--log-level", "warning"], env)
        if wait:
            self.wait_hub(role)
        return service

    def wait_hub(self, role: str) -> None:
        addr = self.net.hosts[role].addr
        wait_until(lambda: self.healthz(role)[0] == 200, READY, self.services[role], f"{role}'s /healthz on {addr}")

    def start_feed(self, symbols: Sequence[str], rate: float) -> Service:
        """Start `manage.py runfeed` of `symbols` on the feed host; wait until each has a tick."""
        argv = [sys.executable, "manage.py", "runfeed", "--symbols", ",".join(symbols), "--rate", str(rate)]
        feed = self._spawn("feed", self.host("feed"), argv, self._python_env({}))
        wait_until(lambda: all(self.last_seqs(symbols).values()), READY, feed, f"a tick of each of {symbols}")
        return feed

    def _start_proxy(self) -> None:
        proxy = self.host("proxy")
        env = {
            "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
            "HUB1_ADDR": f"{self.net.hosts['hub1'].addr}:{HUB_PORT}",
            "HUB2_ADDR": f"{self.net.hosts['hub2'].addr}:{HUB_PORT}",
            "PROXY_BIND": f"*:{PROXY_PORT}",
            "PROXY_STATS_SOCKET": str(self.stats_socket),
            "PROXY_CHECK_INTER": CHECK_INTER,
            "PROXY_CHECK_FALL": CHECK_FALL,
        }
        service = self._spawn("proxy", proxy, ["haproxy", "-db", "-f", str(HAPROXY_CFG)], env)
        wait_until(self.stats_socket.exists, READY, service, "haproxy's stats socket")

    # -- looking -----------------------------------------------------------------------

    @property
    def stats_socket(self) -> Path:
        return self.log_dir / "haproxy.sock"

    @property
    def proxy_http(self) -> str:
        return f"http://{self.net.hosts['proxy'].addr}:{PROXY_PORT}"

    @property
    def proxy_ws(self) -> str:
        return f"ws://{self.net.hosts['proxy'].addr}:{PROXY_PORT}/ws/v1/stream"

    def proxy_command(self, command: str) -> str:
        """One command on HAProxy's stats socket (`show stat`, `set server hubs/hub1 state drain`)."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(5.0)
            sock.connect(str(self.stats_socket))
            sock.sendall(command.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def proxy_servers(self) -> dict[str, dict[str, str]]:
        """The proxy's view of each hub (`show stat` of backend `hubs`): status, scur (open connections), ..."""
        text = self.proxy_command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == "hubs" and r["svname"] not in ("BACKEND", "FRONTEND")}

    def wait_proxy_up(self, *roles: str) -> None:
        wait_until(
            lambda: all(self.proxy_servers()[r]["status"] == "UP" for r in roles),
            READY,
            self.services["proxy"],
            f"the proxy to see {', '.join(roles)} UP",
        )

    def healthz(self, role: str) -> tuple[int, Any]:
        """GET /healthz of the hub on host `role`, directly (not through the proxy); (0, error) when none answers."""
        try:
            return get_json(f"http://{self.net.hosts[role].addr}:{HUB_PORT}/healthz", timeout=2.0)
        except Exception as exc:
            return 0, f"{type(exc).__name__}: {exc}"

    def last_seqs(self, symbols: Sequence[str]) -> dict[str, int]:
        """Each symbol's last seq as the catalog says, read through the proxy (0: no tick yet, or no answer)."""
        try:
            seqs = last_seqs(fetch_catalog(self.proxy_http))
        except CatalogError:
            return dict.fromkeys(symbols, 0)
        return {s: int(seqs.get(s) or 0) for s in symbols}

    def stored_seqs(self, host: str) -> dict[str, int]:
        """The seq of every symbol stored on the Redis of host `host` (`PREFIX:seq`), read directly."""
        client = redis.Redis(host=self.net.hosts[host].addr, port=REDIS_PORT, socket_timeout=2.0)
        try:
            stored: dict[bytes, bytes] = client.hgetall(f"{self.prefix}:seq")  # type: ignore[assignment]
        finally:
            client.close()
        return {k.decode(): int(v) for k, v in stored.items()}

    def logs(self) -> str:
        return self.procs.logs()

    def log_of(self, role: str) -> str:
        return self.services[role].log()

    # -- faults ------------------------------------------------------------------------

    def kill(self, role: str) -> None:
        """SIGKILL the process of `role` (its whole process group): a crash, nothing is said to peers."""
        self.services[role].kill()

    def cut(self, role: str) -> None:
        self.net.cut(self.net.hosts[role])

    def restore(self, role: str) -> None:
        self.net.restore(self.net.hosts[role])

    # -- ending ------------------------------------------------------------------------

    def close(self, keep_logs: bool = False) -> None:
        """Stop every process (SIGTERM, then SIGKILL), remove the hosts; the logs unless `keep_logs`."""
        try:
            self.procs.stop_all()
        finally:
            self.net.close()
            if not keep_logs:
                self.procs.remove_logs()


def replica_synced(host: Host) -> bool:
    """True when the Redis on `host` is a replica whose link to its primary is up (first sync done)."""
    client = redis.Redis(host=host.addr, port=REDIS_PORT, socket_timeout=2.0)
    try:
        info = client.info("replication")
        return info.get("master_link_status") == "up"
    except redis.RedisError:
        return False
    finally:
        client.close()


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, poll: float = 0.05) -> float:
    """Poll until `predicate()`; the seconds it took. Raises AssertionError naming `what` on timeout."""
    start = time.monotonic()
    while not predicate():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)
    return time.monotonic() - start
