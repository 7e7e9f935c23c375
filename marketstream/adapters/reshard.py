"""Changing the shard count: move each symbol whose shard changes, with all its state.

`reshard(old, new, prefix)` is what `python manage.py reshard --from OLD --to NEW` runs
(docs/shards.md). With every feed and hub stopped, it

1. checks the old shards: each says it is shard i of n (``PREFIX:shards``) or nothing, and
   nothing publishes (the seq hash does not change for `quiet` seconds);
2. marks every shard involved ``moving``, so that a hub or feed started meanwhile refuses;
3. for each symbol of each old shard, finds its new shard (`shard_of(symbol, len(new))`);
   if that is another server, copies its seq, epoch, snapshot, description, bar state and
   catalog entry, and its history stream and final bar lists (DUMP/RESTORE: entry ids, so
   seq, kept), checks that the copy holds the same seq, then deletes it from the old one;
4. writes each new shard's marker ``j/n`` and deletes the marker of old servers that are
   not shards any more.

A symbol keeps its seq and epoch: clients recover across the move with `since`, and never
see a reset for it. Running it again after a failure finishes the job (copies replace, and
a symbol is only deleted from its old shard once its new one holds it). Connection leases
(short-lived) are not moved: hubs take new ones when they start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from marketstream.adapters.shards import ShardAddress, connect_sync, marker, marker_key, parse_urls, shard_of
from marketstream.core.bars import INTERVALS

HASHES = ("seq", "epoch", "snapshot", "info", "bar")
MOVING = "moving"
TIMEOUT = 30.0  # seconds one Redis call may take (a DUMP of a long history)


class ReshardError(RuntimeError):
    """The move cannot start (or go on): says why and what to do."""


@dataclass
class Report:
    """What a reshard did: symbols moved (symbol -> (old shard, new shard)) and kept."""

    moved: dict[str, tuple[int, int]] = field(default_factory=dict)
    kept: int = 0
    stray: list[str] = field(default_factory=list)  # on a shard that was not theirs: left alone


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


class Resharder:
    """Moves symbols between the shards `old` and `new` under `prefix`."""

    def __init__(self, old: Sequence[ShardAddress], new: Sequence[ShardAddress], prefix: str) -> None:
        if not old or not new:
            raise ReshardError("give the old and the new shards: --from URL[,URL...] --to URL[,URL...]")
        self.old, self.new, self.prefix = list(old), list(new), prefix
        clients: dict[str, redis.Redis] = {}  # one client per server (by URL)
        for address in [*self.old, *self.new]:
            if address.url not in clients:
                clients[address.url] = connect_sync(address, TIMEOUT)
        self.clients = clients

    def client(self, address: ShardAddress) -> redis.Redis:
        return self.clients[address.url]

    def key(self, name: str) -> str:
        return f"{self.prefix}:{name}"

    def history_key(self, symbol: str) -> str:
        return f"{self.prefix}:history:{symbol}"

    def bar_keys(self, symbol: str) -> list[str]:
        return [f"{self.prefix}:bars:{interval}:{symbol}" for interval in INTERVALS]

    # -- checks -------------------------------------------------------------------------

    def check_markers(self) -> None:
        n = len(self.old)
        for i, address in enumerate(self.old):
            found = _text(self.client(address).get(marker_key(self.prefix)))
            if found not in (None, marker(i, n), MOVING):
                raise ReshardError(
                    f"{address.shown} says it is shard {found} of prefix {self.prefix!r}, not {marker(i, n)}: "
                    "--from must list the shards in the order REDIS_URL had them"
                )

    def check_quiet(self, seconds: float) -> None:
        """Raise when a seq changes on an old shard within `seconds` (a feed publishes)."""
        before = [self.client(a).hgetall(self.key("seq")) for a in self.old]
        time.sleep(seconds)
        after = [self.client(a).hgetall(self.key("seq")) for a in self.old]
        busy = [a.shown for a, x, y in zip(self.old, before, after, strict=True) if x != y]
        if busy:
            raise ReshardError(
                f"ticks are being published on {', '.join(busy)}: stop every feed (and hub) first, then run this again"
            )

    # -- the move -----------------------------------------------------------------------

    def symbols(self, address: ShardAddress) -> set[str]:
        """Every symbol with some state on the shard at `address`."""
        client = self.client(address)
        found = {_text(m) or "" for m in client.smembers(self.key("catalog"))}
        for name in HASHES:
            found.update(_text(k) or "" for k in client.hkeys(self.key(name)))
        history = self.history_key("")
        found.update((_text(k) or "")[len(history) :] for k in client.scan_iter(match=f"{history}*", count=1000))
        found.discard("")
        return found

    def move(self, symbol: str, source: redis.Redis, target: redis.Redis) -> None:
        """Copy `symbol`'s state from `source` to `target`, check it, delete it from `source`."""
        keys = [self.history_key(symbol), *self.bar_keys(symbol)]
        read = source.pipeline(transaction=True)
        for name in HASHES:
            read.hget(self.key(name), symbol)
        read.sismember(self.key("catalog"), symbol)
        for key in keys:
            read.dump(key)
        values = read.execute()
        fields, member, dumps = values[: len(HASHES)], values[len(HASHES)], values[len(HASHES) + 1 :]
        write = target.pipeline(transaction=True)
        for name, value in zip(HASHES, fields, strict=True):
            if value is not None:
                write.hset(self.key(name), symbol, value)
        if member:
            write.sadd(self.key("catalog"), symbol)
        for key, dumped in zip(keys, dumps, strict=True):
            if dumped is not None:
                write.restore(key, 0, dumped, replace=True)
        write.execute()
        if target.hget(self.key("seq"), symbol) != fields[0]:
            raise ReshardError(f"{symbol}: its new shard does not hold its seq after the copy; nothing deleted")
        delete = source.pipeline(transaction=True)
        for name in HASHES:
            delete.hdel(self.key(name), symbol)
        delete.srem(self.key("catalog"), symbol)
        delete.delete(*keys)
        delete.execute()

    def run(self, quiet: float = 1.0, progress: Callable[[str], None] | None = None) -> Report:
        say = progress or (lambda line: None)
        self.check_markers()
        self.check_quiet(quiet)
        for client in self.clients.values():
            client.set(marker_key(self.prefix), MOVING)
        report = Report()
        n_old, n_new = len(self.old), len(self.new)
        for i, address in enumerate(self.old):
            source = self.client(address)
            for symbol in sorted(self.symbols(address)):
                if shard_of(symbol, n_old) != i:
                    report.stray.append(symbol)
                    continue
                j = shard_of(symbol, n_new)
                if self.new[j].url == address.url:
                    report.kept += 1
                    continue
                self.move(symbol, source, self.client(self.new[j]))
                report.moved[symbol] = (i, j)
                say(f"moved {symbol}: shard {i} ({address.shown}) -> shard {j} ({self.new[j].shown})")
        new_urls = {a.url for a in self.new}
        for j, address in enumerate(self.new):
            self.client(address).set(marker_key(self.prefix), marker(j, n_new))
        for address in self.old:
            if address.url not in new_urls:
                self.client(address).delete(marker_key(self.prefix))
        return report

    def close(self) -> None:
        for client in self.clients.values():
            client.close()


def reshard(
    old: str, new: str, prefix: str, quiet: float = 1.0, progress: Callable[[str], None] | None = None
) -> Report:
    """Move every symbol whose shard differs between the REDIS_URL values `old` and `new`."""
    resharder = Resharder(parse_urls(old), parse_urls(new), prefix)
    try:
        return resharder.run(quiet, progress)
    finally:
        resharder.close()
