"""Hosts on one machine: Linux network namespaces on a bridge, built and torn down by a test.

`Network` makes a bridge in the root namespace (with an address, so that the test process
itself reaches every host) and, per host, a namespace whose `eth0` is one end of a veth pair
whose other end is a port of the bridge. A host's link is cut and restored on that root-side
end (`ip link set ... down/up`): to the host's processes it is a cable pulled out, not a
process that died.

Names are unique per run and carry the pid of the process that made them
(namespaces `mscl-PID-RUN-ROLE`; bridge and veth ends `mscRUN...` with the alias
`mscl-PID-RUN`), so that a run that crashed leaves nothing that clashes with the next, and
`sweep_stale()` removes what runs whose process is gone left behind. Needs root and iproute2:
`require_netns()` fails (never skips) with a message saying what is missing.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import random
import re
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass

import pytest

PREFIX = "mscl"
_NS_RE = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)-")
_ALIAS_RE = re.compile(rf"^{PREFIX}-(\d+)-([0-9a-f]+)$")


class NetnsError(RuntimeError):
    """An `ip` command failed."""


def ip(*args: str, check: bool = True) -> str:
    """Run `ip ARGS`; its stdout. Raises NetnsError with ip's message when it fails and `check`."""
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=20)
    if check and done.returncode != 0:
        raise NetnsError(f"ip {' '.join(args)}: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout


def require_netns() -> None:
    """Fail the test (never skip) unless this process is root and `ip netns` works."""
    if os.geteuid() != 0:
        pytest.fail(
            "the cluster tests build hosts with Linux network namespaces and need root "
            "(run `make test-cluster` as root, as CI does)",
            pytrace=False,
        )
    if shutil.which("ip") is None:
        pytest.fail("the cluster tests need iproute2's `ip`: apt-get install -y iproute2", pytrace=False)
    probe = f"{PREFIX}-probe-{uuid.uuid4().hex[:8]}"
    try:
        ip("netns", "add", probe)
    except NetnsError as exc:
        pytest.fail(f"`ip netns add` does not work here ({exc}); the cluster tests need network namespaces")
    finally:
        ip("netns", "del", probe, check=False)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_namespace(ns: str) -> None:
    """SIGKILL every process in namespace `ns`, then delete it (its veth pairs go with it)."""
    for pid in ip("netns", "pids", ns, check=False).split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", ns, check=False)


def sweep_stale() -> list[str]:
    """Remove the namespaces, bridges and veth ends of earlier runs whose process is gone. Returns their names."""
    removed = []
    for line in ip("netns", "list", check=False).splitlines():
        ns = line.split()[0] if line.strip() else ""
        match = _NS_RE.match(ns)
        if match and not _alive(int(match.group(1))):
            _kill_namespace(ns)
            removed.append(ns)
    for line in ip("-o", "link", "show", check=False).splitlines():
        name = line.split(":")[1].strip().split("@")[0] if ":" in line else ""
        alias = re.search(r"alias (\S+)", line)
        match = _ALIAS_RE.match(alias.group(1)) if alias else None
        if match and not _alive(int(match.group(1))):
            ip("link", "del", name, check=False)
            removed.append(name)
    return removed


def _free_subnet() -> ipaddress.IPv4Network:
    """A /24 in 10.200.0.0/13 that no interface of the root namespace is on."""
    used = [ipaddress.ip_interface(a).network for a in re.findall(r"inet (\S+)", ip("-4", "-o", "addr", "show"))]
    for _ in range(200):
        net = ipaddress.IPv4Network(f"10.{random.randrange(200, 208)}.{random.randrange(256)}.0/24")
        if not any(net.overlaps(u) for u in used):
            return net
    raise NetnsError("no free /24 in 10.200.0.0/13 for the cluster's bridge")


@dataclass(frozen=True)
class Host:
    """One host: a namespace with an address on the cluster's bridge."""

    role: str  # "hub1", "redis0", "proxy", ...
    ns: str  # the namespace's name
    addr: str  # its IPv4 address
    veth: str  # the root-side end of its link (a bridge port)

    def argv(self, *argv: str) -> list[str]:
        """`argv` run inside the host: ``ip netns exec NS ARGV`` (which execs: the pid is the command's)."""
        return ["ip", "netns", "exec", self.ns, *argv]


class Network:
    """A bridge and the hosts on it. `close()` removes everything `add()` made, whatever happened."""

    def __init__(self) -> None:
        self.run = uuid.uuid4().hex[:6]
        self.tag = f"{PREFIX}-{os.getpid()}-{self.run}"
        self.subnet = _free_subnet()
        self.bridge = f"msc{self.run}br"
        self.hosts: dict[str, Host] = {}
        self._addrs = iter(self.subnet.hosts())
        self.gateway = str(next(self._addrs))  # the root namespace's address on the bridge
        ip("link", "add", self.bridge, "type", "bridge")
        try:
            ip("link", "set", self.bridge, "alias", self.tag)
            ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        except BaseException:
            ip("link", "del", self.bridge, check=False)
            raise

    def add(self, role: str) -> Host:
        """A new host named `role`, up, with loopback and an address on the bridge (no default route: it reaches
        only the other hosts and the root namespace)."""
        host = Host(role, f"{self.tag}-{role}", str(next(self._addrs)), f"msc{self.run}{len(self.hosts)}")
        self.hosts[role] = host
        ip("netns", "add", host.ns)
        ip("link", "add", host.veth, "type", "veth", "peer", "name", "eth0", "netns", host.ns)
        ip("link", "set", host.veth, "alias", self.tag)
        ip("link", "set", host.veth, "master", self.bridge, "up")
        ip("-n", host.ns, "link", "set", "lo", "up")
        ip("-n", host.ns, "addr", "add", f"{host.addr}/{self.subnet.prefixlen}", "dev", "eth0")
        ip("-n", host.ns, "link", "set", "eth0", "up")
        return host

    def cut(self, host: Host) -> None:
        """Pull the host's cable: its link goes down; its processes keep running, unreachable."""
        ip("link", "set", host.veth, "down")

    def restore(self, host: Host) -> None:
        """Plug the host's cable back in."""
        ip("link", "set", host.veth, "up")

    def close(self) -> None:
        """Kill every process left in the hosts, delete the links, the namespaces and the bridge.

        The links are deleted by name: a namespace outlives its name while a socket of it is still
        closing (an orphaned TCP connection retrying its FIN to a host whose cable was pulled), and
        its veth pair with it."""
        for host in reversed(list(self.hosts.values())):
            _kill_namespace(host.ns)
            ip("link", "del", host.veth, check=False)
        self.hosts.clear()
        ip("link", "del", self.bridge, check=False)
