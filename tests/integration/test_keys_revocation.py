"""Taking rights away from connected keys, on real hubs (docs: /tmp/spec/auth.md): revocation
closes a key's connections on every hub with 4003 (and kills its tokens), an expiring key is
closed when it expires, and a key that loses symbols gets `unsubscribed` for them. The
handshake and revocation again on PostgreSQL (DATABASE_URL).

The changes are made as an operator makes them: `manage.py revokekey`, `createkey --expires`,
`key.save()` in `manage.py shell -c`, each announcing the change over Redis.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from loadtest.services import Hub
from tests.support.client import StreamClient
from tests.support.keys import (
    Deployment,
    bearer,
    close_reason,
    deployment,
    http,
    refused,
    welcomed,
)

SYMBOLS = ["AAPL", "MSFT"]
RATE = 60.0  # ticks/s over SYMBOLS
REVOKED_WITHIN = 5.0  # seconds from the start of `revokekey` to the close of every connection


@pytest.fixture(scope="module")
def dep(redis_url: str) -> Iterator[Deployment]:
    """Two hubs on one key database and Redis prefix, and a feed of SYMBOLS."""
    with deployment("revoke", redis_url, [{}, {}], SYMBOLS, RATE) as d:
        yield d
        for hub in d.hubs:
            assert hub.running(), f"a hub died:\n{d.logs()}"


async def closed_within(clients: list[StreamClient], started: float, within: float) -> list[float]:
    """Wait until every client is closed with 4003; the seconds from `started` to each close."""
    seconds = []
    for client in clients:
        code = await client.wait_closed(within=within + 5.0)
        seconds.append(time.monotonic() - started)
        assert code == 4003, f"closed with {code} ({close_reason(client)!r}), expected 4003"
    return seconds


async def test_revokekey_closes_the_connections_on_every_hub_with_4003(dep: Deployment) -> None:
    key = dep.store.create("revoked")
    other = dep.store.create("bystander")
    token = http(f"{dep.hubs[0].base}/api/v1/tokens", bearer(key), method="POST").json()["token"]
    clients = [await welcomed(hub.ws_url, bearer(key)) for hub in dep.hubs]
    clients.append(await welcomed(f"{dep.hubs[1].ws_url}?token={token}"))
    bystanders = [await welcomed(hub.ws_url, bearer(other)) for hub in dep.hubs]
    try:
        for client in clients + bystanders:
            await client.subscribe(["AAPL"], snapshot=False)
        started = time.monotonic()
        dep.store.revoke("revoked")
        command = time.monotonic() - started
        seconds = await closed_within(clients, started, REVOKED_WITHIN)
        assert max(seconds) < REVOKED_WITHIN, f"closed after {seconds} s (revokekey itself took {command:.2f} s)"
        assert all("revoked" in close_reason(c) for c in clients), [close_reason(c) for c in clients]
        # the key, and the token minted from it, are refused from now on, on every hub
        for hub in dep.hubs:
            for url, headers in [
                (hub.ws_url, bearer(key)),
                (f"{hub.ws_url}?token={key}", {}),
                (f"{hub.ws_url}?token={token}", {}),
            ]:
                assert (await refused(url, headers)).status == 403
            assert http(f"{hub.base}/api/v1/symbols", bearer(key)).status == 401
        # other keys' connections stay and keep receiving
        for client in bystanders:
            mark = len(client.frames)
            await client.wait_ticks("AAPL", 2, start=mark)
            assert not client.closed
    finally:
        for client in clients + bystanders:
            await client.aclose()


@pytest.mark.parametrize(
    ("change", "code"),
    [("disabled", "k.disabled = True; k.save()"), ("deleted", "k.delete()")],
)
async def test_a_key_disabled_or_deleted_in_the_database_is_closed_with_4003(
    dep: Deployment, change: str, code: str
) -> None:
    key = dep.store.create(change)
    clients = [await welcomed(hub.ws_url, bearer(key)) for hub in dep.hubs]
    try:
        started = time.monotonic()
        dep.store.run(f"from consumers.models import ApiKey; k = ApiKey.objects.get(name={change!r}); {code}")
        seconds = await closed_within(clients, started, REVOKED_WITHIN)
        assert max(seconds) < REVOKED_WITHIN, f"closed after {seconds} s"
        for hub in dep.hubs:
            assert (await refused(hub.ws_url, bearer(key))).status == 403
    finally:
        for client in clients:
            await client.aclose()


async def test_an_expiring_key_is_closed_with_4003_when_it_expires(dep: Deployment) -> None:
    before = time.time()
    key = dep.store.create("expiring", "--expires", "3s")
    after = time.time()  # the key expires between before + 3 and after + 3
    clients = [await welcomed(hub.ws_url, bearer(key)) for hub in dep.hubs]
    try:
        assert time.time() < before + 3, "the key expired before it could connect (a slow machine?)"
        for client in clients:
            code = await client.wait_closed(within=10.0)
            at = time.time()
            assert code == 4003, f"closed with {code} ({close_reason(client)!r})"
            assert before + 3 - 0.2 <= at <= after + 3 + 2.0, f"closed {at - after - 3:+.2f} s after the expiry"
            assert "expired" in close_reason(client), close_reason(client)
        for hub in dep.hubs:
            assert (await refused(hub.ws_url, bearer(key))).status == 403
    finally:
        for client in clients:
            await client.aclose()


async def test_a_key_that_loses_symbols_is_unsubscribed_from_them(dep: Deployment) -> None:
    key = dep.store.create("narrowed", "--symbols", "*")  # on hub A, changed with key.save()
    twin_key = dep.store.create("narrowed-twin")  # on hub B, with filter().update() and announce()
    clients: list[StreamClient] = []
    try:
        client = await welcomed(dep.hubs[0].ws_url, bearer(key))
        clients.append(client)
        ack = await client.subscribe(["AAPL", "MSFT"], throttle_ms=0)
        assert ack.message["rejected"] == {}
        await client.wait_ticks("MSFT", 3)
        await client.wait_ticks("AAPL", 3)
        twin = await welcomed(dep.hubs[1].ws_url, bearer(twin_key))
        clients.append(twin)
        await twin.subscribe(["AAPL", "MSFT"], throttle_ms=0)
        await twin.wait_ticks("MSFT", 2)

        dep.store.run(
            "from consumers.models import ApiKey; k = ApiKey.objects.get(name='narrowed'); k.symbols = 'AAPL'; k.save()"
        )
        dep.store.run(
            "from consumers.models import ApiKey; from consumers.signals import announce; "
            "ApiKey.objects.filter(name='narrowed-twin').update(symbols='AAPL'); announce('narrowed-twin')"
        )
        for c in clients:
            notice = await c.wait_for(lambda f: f.type == "unsubscribed", within=8.0)
            assert notice.message == {"type": "unsubscribed", "symbols": ["MSFT"], "reason": "forbidden"}
            # AAPL keeps flowing; no MSFT tick after the notice
            await c.wait_ticks("AAPL", 10, start=notice.index + 1)
            late = [d.seq for d in c.deliveries("MSFT", start=notice.index + 1)]
            assert not late, f"MSFT ticks after the unsubscribed notice: seqs {late}"
            assert not c.closed
        # MSFT is now forbidden on a new subscribe; AAPL still fine
        ack = await client.subscribe(["MSFT", "AAPL"], snapshot=False)
        assert ack.message["rejected"] == {"MSFT": "forbidden"} and ack.message["symbols"] == ["AAPL"]
        listed = await client.request("list")
        assert [s["symbol"] for s in listed.message["subscriptions"]] == ["AAPL"]
    finally:
        for c in clients:
            await c.aclose()


# -- PostgreSQL ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pg(redis_url: str) -> Iterator[Deployment]:
    """One hub on a fresh PostgreSQL database (no feed: the handshake needs none)."""
    with deployment("keys-pg", redis_url, [{}], postgresql=True) as d:
        yield d


async def test_keys_on_postgresql(pg: Deployment) -> None:
    hub: Hub = pg.hubs[0]
    assert pg.store.database_url.startswith("postgresql://"), pg.store.database_url
    key = pg.store.create("pg-key", "--max-subscriptions", "5")
    client = await welcomed(hub.ws_url, bearer(key))
    try:
        assert client.frames[0].message["limits"]["max_subscriptions"] == 5
        assert (await refused(hub.ws_url, bearer("ms_" + "p" * 43))).status == 403
        assert (await refused(hub.ws_url)).status == 403
        started = time.monotonic()
        pg.store.revoke("pg-key")
        seconds = await closed_within([client], started, REVOKED_WITHIN)
        assert seconds[0] < REVOKED_WITHIN, f"closed after {seconds[0]:.2f} s"
        assert (await refused(hub.ws_url, bearer(key))).status == 403
    finally:
        await client.aclose()
    # the hub really reads PostgreSQL: a key made there is accepted at once
    fresh = await welcomed(f"{hub.ws_url}?token={pg.store.create('pg-fresh')}")
    await fresh.aclose()
    assert hub.running(), hub.log_tail()
