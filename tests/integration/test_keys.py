"""API keys against real hubs (uvicorn), Redis and a SQLite key database (docs: /tmp/spec/auth.md).

The handshake (no, bad and good credentials: header, ?token= with a key or a minted token,
expired tokens, Origin, anonymous hubs), entitlements (subscribe, the HTTP catalog and
history, /metrics, /healthz), per-key and per-hub connection caps, and logs that never show
a key or token. Revocation, expiry, entitlement changes and PostgreSQL: test_keys_revocation.py.

One key database, feed and pair of hubs serve the module (each test makes keys of its own);
tests that need other hub settings start a hub of their own on the same database and prefix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from loadtest.services import Hub
from tests.support.client import stream
from tests.support.keys import (
    Deployment,
    bearer,
    close_reason,
    connect,
    deployment,
    http,
    refused,
    welcomed,
)

SYMBOLS = ["AAPL", "MSFT", "FX:EUR/USD"]
TOKEN_TTL_S = 1  # hub B's: its tokens expire within a second


@pytest.fixture(scope="module")
def dep(redis_url: str) -> Iterator[Deployment]:
    """Hub A (defaults) and hub B (MARKETSTREAM_TOKEN_TTL_S=1), a feed of SYMBOLS, one key database."""
    with deployment("keys", redis_url, [{}, {"MARKETSTREAM_TOKEN_TTL_S": str(TOKEN_TTL_S)}], SYMBOLS) as d:
        yield d
        for hub in d.hubs:
            assert hub.running(), f"a hub died:\n{d.logs()}"


def hub_a(dep: Deployment) -> Hub:
    return dep.hubs[0]


def hub_b(dep: Deployment) -> Hub:
    return dep.hubs[1]


def mint(hub: Hub, key: str) -> dict[str, object]:
    answer = http(f"{hub.base}/api/v1/tokens", bearer(key), method="POST")
    assert answer.status == 200, (answer.status, answer.body)
    body = answer.json()
    assert isinstance(body, dict) and str(body["token"]).startswith("mst_"), body
    return body


# -- handshake -------------------------------------------------------------------------


async def test_no_credential_is_refused_403(dep: Deployment) -> None:
    refusal = await refused(hub_a(dep).ws_url)
    assert refusal.status == 403 and refusal.body and refusal.content_type.startswith("text/plain"), refusal
    # a session cookie that names no logged-in user counts as no credential
    refusal = await refused(hub_a(dep).ws_url, {"Cookie": "sessionid=nosuchsession"})
    assert refusal.status == 403, refusal


@pytest.mark.parametrize(
    ("how", "credential"),
    [
        ("header", "ms_" + "x" * 43),
        ("header", "not-a-key"),
        ("query", "ms_" + "y" * 43),
        ("query", "mst_forged.value:signature"),
    ],
)
async def test_a_bad_credential_is_refused_403(dep: Deployment, how: str, credential: str) -> None:
    url = hub_a(dep).ws_url
    if how == "header":
        refusal = await refused(url, bearer(credential))
    else:
        refusal = await refused(f"{url}?token={credential}")
    assert refusal.status == 403, refusal
    assert credential not in refusal.body


async def test_a_good_key_by_header_is_welcomed_with_its_limits(dep: Deployment) -> None:
    key = dep.store.create(
        "limits", "--max-subscriptions", "2", "--min-throttle-ms", "25", "--max-requests-per-s", "11"
    )
    async with stream(hub_a(dep).ws_url, "json", additional_headers=bearer(key)) as client:
        limits = client.frames[0].message["limits"]
        assert (limits["max_subscriptions"], limits["min_throttle_ms"], limits["max_requests_per_s"]) == (2, 25, 11)
        # and they apply
        ack = await client.subscribe(["AAPL", "MSFT", "FX:EUR/USD"], throttle_ms=0, snapshot=False)
        assert ack.message["symbols"] == ["AAPL", "MSFT"], ack.message
        assert ack.message["rejected"] == {"FX:EUR/USD": "limit_exceeded"}
        assert ack.message["throttle_ms"] == 25
    # a key without limits of its own gets the hub's defaults
    plain = dep.store.create("plain")
    async with stream(hub_a(dep).ws_url, additional_headers=bearer(plain)) as client:
        limits = client.frames[0].message["limits"]
        assert (limits["max_subscriptions"], limits["min_throttle_ms"], limits["max_requests_per_s"]) == (1000, 0, 50)


async def test_a_key_as_query_token(dep: Deployment) -> None:
    key = dep.store.create("query")
    for hub in dep.hubs:
        async with stream(f"{hub.ws_url}?token={key}") as client:
            ack = await client.subscribe(["AAPL"])
            assert ack.message["rejected"] == {}
            await client.wait_ticks("AAPL", 2)


async def test_a_minted_token_as_query_token(dep: Deployment) -> None:
    key = dep.store.create("minter", "--symbols", "AAPL")
    answer = http(f"{hub_a(dep).base}/api/v1/tokens", bearer(key), method="POST")
    assert answer.status == 200, answer
    assert "no-store" in answer.headers.get("cache-control", ""), answer.headers
    body = answer.json()
    token = body["token"]
    assert token.startswith("mst_") and key not in token
    assert 295 <= body["expires_in"] <= 300 and abs(body["expires"] - time.time() - body["expires_in"]) <= 2, body
    # ?token=KEY mints too
    assert http(f"{hub_a(dep).base}/api/v1/tokens?token={key}", method="POST").status == 200
    # accepted by every hub (they share the SECRET_KEY), with the key's entitlement
    for hub in dep.hubs:
        async with stream(f"{hub.ws_url}?token={token}") as client:
            ack = await client.subscribe(["AAPL", "MSFT"], snapshot=False)
            assert ack.message["symbols"] == ["AAPL"] and ack.message["rejected"] == {"MSFT": "forbidden"}
    # no key, no token
    answer = http(f"{hub_a(dep).base}/api/v1/tokens", method="POST")
    assert answer.status == 401 and answer.json()["error"], answer


async def test_an_expired_token_is_refused(dep: Deployment) -> None:
    key = dep.store.create("shortlived")
    body = mint(hub_b(dep), key)
    assert 0 <= int(str(body["expires_in"])) <= TOKEN_TTL_S, body
    token = str(body["token"])
    await asyncio.sleep(max(0.0, int(str(body["expires"])) - time.time()) + 0.3)
    for hub in dep.hubs:
        refusal = await refused(f"{hub.ws_url}?token={token}")
        assert refusal.status == 403, refusal
        answer = http(f"{hub.base}/api/v1/symbols?token={token}")
        assert answer.status == 401, answer
    # the key itself still works
    async with stream(hub_b(dep).ws_url, additional_headers=bearer(key)):
        pass


async def test_origin(dep: Deployment) -> None:
    hub = hub_a(dep)
    key = dep.store.create("origins", "--origins", "https://app.example.com,https://other.example.com")
    plain = dep.store.create("no-origins")
    own = f"http://127.0.0.1:{hub.port}"
    for k in (key, plain):
        refusal = await refused(hub.ws_url, bearer(k), origin="https://evil.example.net")
        assert refusal.status == 403, refusal
        client = await welcomed(hub.ws_url, bearer(k), origin=own)
        await client.aclose()
    client = await welcomed(f"{hub.ws_url}?token={key}", origin="https://app.example.com")
    await client.aclose()
    refusal = await refused(hub.ws_url, bearer(plain), origin="https://app.example.com")
    assert refusal.status == 403, refusal
    # HTTP too: 403 for an origin that is not allowed
    answer = http(f"{hub.base}/api/v1/symbols", {**bearer(plain), "Origin": "https://evil.example.net"})
    assert answer.status == 403, answer
    answer = http(f"{hub.base}/api/v1/symbols", {**bearer(key), "Origin": "https://other.example.com"})
    assert answer.status == 200, answer


async def test_an_anonymous_hub_admits_no_credential_but_refuses_a_bad_key(dep: Deployment) -> None:
    hub = dep.hub(MARKETSTREAM_ANONYMOUS="true", MARKETSTREAM_ANONYMOUS_SYMBOLS="AAPL")
    async with stream(hub.ws_url) as client:
        ack = await client.subscribe(["AAPL", "MSFT"], snapshot=False)
        assert ack.message["symbols"] == ["AAPL"] and ack.message["rejected"] == {"MSFT": "forbidden"}
    for headers, url in [(bearer("ms_" + "z" * 43), hub.ws_url), ({}, f"{hub.ws_url}?token=mst_bad")]:
        refusal = await refused(url, headers)
        assert refusal.status == 403, refusal
    key = dep.store.create("on-anonymous-hub")
    async with stream(hub.ws_url, additional_headers=bearer(key)) as client:
        ack = await client.subscribe(["MSFT"], snapshot=False)
        assert ack.message["rejected"] == {}
    # anonymous callers do not get the metrics; a key does
    assert http(f"{hub.base}/metrics").status == 401
    assert http(f"{hub.base}/metrics", bearer(key)).status == 200
    hub.stop()


# -- entitlements ----------------------------------------------------------------------


async def test_subscribing_outside_the_entitlement_is_forbidden(dep: Deployment) -> None:
    key = dep.store.create("fx-desk", "--symbols", "AAPL,FX:*")
    async with stream(hub_b(dep).ws_url, additional_headers=bearer(key)) as client:
        ack = await client.subscribe(["AAPL", "fx:eur/usd", "MSFT"])
        assert ack.message["symbols"] == ["AAPL", "FX:EUR/USD"], ack.message
        assert ack.message["rejected"] == {"MSFT": "forbidden"}
        await client.wait_ticks("AAPL", 3)
        await client.wait_ticks("FX:EUR/USD", 3)
        assert not client.deliveries("MSFT")
        listed = await client.request("list")
        assert sorted(s["symbol"] for s in listed.message["subscriptions"]) == ["AAPL", "FX:EUR/USD"]


async def test_http_catalog_history_and_bars_follow_the_entitlement(dep: Deployment) -> None:
    base = hub_a(dep).base
    key = dep.store.create("fx-http", "--symbols", "AAPL,FX:*")
    everything = dep.store.create("everything")
    answer = http(f"{base}/api/v1/symbols", bearer(key))
    assert answer.status == 200, answer
    assert sorted(s["symbol"] for s in answer.json()["symbols"]) == ["AAPL", "FX:EUR/USD"]
    answer = http(f"{base}/api/v1/symbols?token={everything}")
    assert sorted(s["symbol"] for s in answer.json()["symbols"]) == sorted(SYMBOLS)

    answer = http(f"{base}/api/v1/history?symbol=MSFT&limit=5", bearer(key))
    assert answer.status == 403 and answer.json()["error"] == "forbidden", answer
    answer = http(f"{base}/api/v1/history?symbol=AAPL&limit=5", bearer(key))
    assert answer.status == 200 and answer.json()["ticks"], answer
    answer = http(f"{base}/api/v1/bars?symbol=MSFT&interval=1m", bearer(key))
    assert answer.status == 403 and answer.json()["error"] == "forbidden", answer
    answer = http(f"{base}/api/v1/bars?symbol=AAPL&interval=1h", bearer(key))
    assert answer.status == 200 and answer.json()["bars"], answer

    for path in ("/api/v1/symbols", "/api/v1/history?symbol=AAPL", "/api/v1/bars?symbol=AAPL&interval=1m"):
        for headers in ({}, bearer("ms_" + "q" * 43)):
            answer = http(base + path, headers)
            assert answer.status == 401, (path, answer)
            assert answer.headers.get("content-type", "").startswith("application/json"), answer
            body = answer.json()
            assert body["error"] and body["message"], body
            assert answer.headers.get("www-authenticate", "").startswith("Bearer"), answer.headers


async def test_metrics_need_a_key_and_healthz_is_open(dep: Deployment) -> None:
    base = hub_a(dep).base
    key = dep.store.create("metrics")
    answer = http(f"{base}/metrics")
    assert answer.status == 401 and answer.json()["error"], answer
    assert http(f"{base}/metrics", bearer("ms_" + "m" * 43)).status == 401
    answer = http(f"{base}/metrics", bearer(key))
    assert answer.status == 200 and "marketstream_connections" in answer.body, answer.status
    assert http(f"{base}/metrics?token={key}").status == 200
    assert http(f"{base}/healthz").status == 200


# -- connection caps -------------------------------------------------------------------


async def test_a_key_over_its_connection_limit_across_two_hubs_is_closed_4001(dep: Deployment) -> None:
    key = dep.store.create("two-conns", "--max-connections", "2")
    a, b = hub_a(dep), hub_b(dep)
    first = await welcomed(a.ws_url, bearer(key))
    second = await welcomed(b.ws_url, bearer(key))
    try:
        for hub in (a, b):
            extra = await connect(hub.ws_url, bearer(key))
            assert await extra.wait_closed() == 4001, f"port {hub.port}: {extra.frames}"
            assert not extra.frames, f"an over-limit connection got frames: {extra.frames}"
            assert "max_connections 2" in close_reason(extra), close_reason(extra)
        await first.aclose()
        # the closed connection's place is free again (its lease is given back on the disconnect)
        deadline = time.monotonic() + 3.0
        attempts = 0
        while True:
            attempts += 1
            again = await connect(b.ws_url, bearer(key))
            frame = await again.wait_for(lambda f: True)
            if frame.type == "welcome":
                await again.aclose()
                break
            await again.aclose()
            assert again.close_code == 4001 and time.monotonic() < deadline, (again.close_code, attempts)
            await asyncio.sleep(0.1)
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_full_hub_closes_new_connections_1013(dep: Deployment) -> None:
    hub = dep.hub(MARKETSTREAM_MAX_CONNECTIONS="2")
    key = dep.store.create("hub-cap")
    held = [await welcomed(hub.ws_url, bearer(key)) for _ in range(2)]
    try:
        extra = await connect(hub.ws_url, bearer(key))
        assert await extra.wait_closed() == 1013
        assert close_reason(extra) == "hub full: 2 connections"
        assert not extra.frames
        # a credential is still checked first
        assert (await refused(hub.ws_url)).status == 403
    finally:
        for client in held:
            await client.aclose()
        hub.stop()


# -- logs ------------------------------------------------------------------------------


async def test_logs_never_show_keys_or_tokens(dep: Deployment) -> None:
    hub = dep.debug_hub()
    key = dep.store.create("logged")
    revoked = dep.store.create("logged-revoked")
    token = str(mint(hub, key)["token"])
    bad_key, bad_token = "ms_" + "b" * 43, token[:-6] + "AAAAAA"
    dep.store.revoke("logged-revoked")
    for url, headers in [
        (hub.ws_url, bearer(key)),
        (f"{hub.ws_url}?token={key}", {}),
        (f"{hub.ws_url}?token={token}&encoding=json", {}),
    ]:
        client = await welcomed(url, headers)
        await client.aclose()
    for url, headers in [
        (hub.ws_url, bearer(bad_key)),
        (hub.ws_url, bearer(revoked)),
        (f"{hub.ws_url}?token={bad_key}", {}),
        (f"{hub.ws_url}?token={revoked}", {}),
        (f"{hub.ws_url}?token={bad_token}", {}),
    ]:
        assert (await refused(url, headers)).status == 403
    assert (await refused(hub.ws_url, bearer(key), origin="https://evil.example.net")).status == 403
    assert http(f"{hub.base}/api/v1/symbols?token={key}").status == 200
    assert http(f"{hub.base}/api/v1/symbols?token={bad_key}").status == 401
    assert http(f"{hub.base}/api/v1/history?symbol=AAPL&token={token}").status == 200
    assert http(f"{hub.base}/api/v1/history?symbol=AAPL&token={bad_token}").status == 401
    hub.stop()
    log = hub.log()
    assert "WebSocket /ws/v1/stream" in log, f"uvicorn logged no handshake; is it at debug?\n{log[-3000:]}"
    assert " DEBUG " in log, f"nothing logged at DEBUG:\n{log[-3000:]}"
    assert "/ws/v1/stream?token=[redacted]" in log, f"no handshake with ?token= logged (redacted):\n{log[-3000:]}"
    secrets = {"key": key, "revoked key": revoked, "token": token, "bad key": bad_key, "bad token": bad_token}
    for what, secret in secrets.items():
        leaked = [line for line in log.splitlines() if secret in line or secret[4:30] in line]
        assert not leaked, f"the {what} is in the hub's log:\n" + "\n".join(leaked[:5])
