"""Fuzzing the authenticated WebSocket edge in-process (hypothesis, channels' ApplicationCommunicator).

Two properties, on the embedded default (`Services.build()`: in-memory store and layer) with
a `Gate` of our own whose `GrantBook` is filled by hand (no database, anonymous off):

1. The handshake: random Authorization/Origin/Cookie/Host headers and query strings. It
   never raises; it is refused with HTTP 403 (400 for an unknown `?encoding=`) or accepted
   with a `welcome`, and accepted exactly when the credential that counts (Bearer, else
   `?token=`) is the good key or a valid token and the Origin, if any, is allowed. After
   each disconnect the gate holds nothing and the key's lease count is back to 0.
2. The request path of a key entitled to `AAPL,FX:*`: random frames (JSON or msgpack
   values, requests with random ops, symbols, throttles, `since` maps, raw garbage). Every
   reply is a map with a known `type`; the connection never holds nor receives a symbol
   outside its entitlement; known symbols outside it come back as `forbidden`.

Each property runs a fixed number of examples (the counts are printed; run with -s).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hmac
import time
from collections import Counter
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar
from unittest import mock
from urllib.parse import parse_qs, quote, urlsplit

import msgpack
import orjson
import pytest
from channels.testing import ApplicationCommunicator
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consumers import grants as grants_module
from consumers import tokens
from consumers.gate import MAX_CREDENTIAL_CHARS, Access, Gate
from consumers.grants import Grant, GrantBook
from consumers.models import ApiKey
from feeds.publisher import Publisher
from marketstream import wiring
from marketstream.asgi import application
from marketstream.core.codec import BadFrame, decode_request
from marketstream.core.entitlements import Entitlement
from marketstream.core.leases import MemoryLeases
from marketstream.core.symbols import normalize
from marketstream.wiring import Services

T = TypeVar("T")

HANDSHAKE_EXAMPLES = 4000
REQUEST_EXAMPLES = 1000
SECRET = "s"
HOST = "hub.example"
ALLOWED_ORIGIN = "https://app.example"  # Access.allowed_origins
KEY_ORIGIN = "https://good.example"  # the good key's own allowed_origins

GOOD_KEY = "ms_fuzz-good-key-0123456789abcdefghijklmnopqrstuvwx"
EXPIRED_KEY = "ms_fuzz-expired-key-0123456789abcdefghijklmnopqrstu"
REVOKED_KEY = "ms_fuzz-revoked-key-0123456789abcdefghijklmnopqrstu"  # its hash is known, its grant gone
STALE_KEY = "ms_fuzz-stale-key-0123456789abcdefghijklmnopqrstuvw"  # its hash points at the good grant
GOOD_ID, EXPIRED_ID = "key:1", "key:2"

ALLOWED_KNOWN = ["AAPL", "FX:EURUSD", "FX:GBPUSD"]
FORBIDDEN_KNOWN = ["MSFT", "EUR/USD", "BTC/USD", "FXEURUSD"]
UNKNOWN_VALID = ["FX:NOPE", "NOPE", "AAPL2"]
MALFORMED = ["", "bad sym", "A" * 33, "aapl ", "FX:*", "*", "ÄAPL", "AAPL\x00", "\u212a"]
CATALOG = ALLOWED_KNOWN + FORBIDDEN_KNOWN
ENTITLEMENT = Entitlement(["AAPL", "FX:*"])
MAX_SUBSCRIPTIONS = 2  # fewer than the allowed symbols: limit_exceeded is reachable
REPLY_TYPES = {"welcome", "ack", "error", "pong", "subscriptions", "snapshot", "ticks", "unsubscribed", "reset", "bars"}
RESPONSE_TYPES = {"ack", "error", "pong", "subscriptions"}  # one per request

# credentials by label, resolved at run time (tokens are minted when the environment is built)
CREDENTIAL_LABELS = [
    "good_key",
    "expired_key",
    "revoked_key",
    "stale_key",
    "token_valid",
    "token_wrong_secret",
    "token_expired",
    "token_expired_grant",
    "token_unknown_grant",
    "token_tampered",
    "token_bare_prefix",
    "token_too_long",
    "key_too_long",
]


class Env:
    """The services (a catalog with ticks in the store) and a gate with a hand-filled GrantBook."""

    def __init__(self, services: Services, gate: Gate, leases: MemoryLeases) -> None:
        self.services = services
        self.gate = gate
        self.leases = leases
        valid = gate.mint(gate.book.grants[GOOD_ID])[0]
        self.credentials = {
            "good_key": GOOD_KEY,
            "expired_key": EXPIRED_KEY,
            "revoked_key": REVOKED_KEY,
            "stale_key": STALE_KEY,
            "token_valid": valid,
            "token_wrong_secret": tokens.mint(GOOD_ID, 300, "not the secret")[0],
            "token_expired": tokens.mint(GOOD_ID, 300, SECRET, now=time.time() - 3600)[0],
            "token_expired_grant": tokens.mint(EXPIRED_ID, 300, SECRET)[0],
            "token_unknown_grant": tokens.mint("key:404", 300, SECRET)[0],
            "token_tampered": valid[:-3] + ("AAA" if not valid.endswith("AAA") else "BBB"),
            "token_bare_prefix": tokens.TOKEN_PREFIX,
            "token_too_long": valid + "x" * MAX_CREDENTIAL_CHARS,
            "key_too_long": GOOD_KEY + "x" * MAX_CREDENTIAL_CHARS,
        }
        self.valid_keys = {GOOD_KEY}
        self.valid_tokens = {GOOD_KEY, valid}  # ?token= takes a key or a token
        self.state = {"hub": services.hub, "gate": gate, "services": services}
        self.sessions_asked = 0
        self.db_asked = 0

    def resolve(self, credential: tuple[str, str]) -> str:
        kind, value = credential
        return self.credentials[value] if kind == "label" else value

    async def check_idle(self) -> None:
        """Nothing held after every connection ended."""
        assert self.gate.held == {} and self.gate._grant_of == {}, self.gate.held
        assert await self.leases.count(GOOD_ID) == 0
        assert self.services.hub.connections == set()


async def build_env(monkeypatch: pytest.MonkeyPatch) -> Env:
    assert wiring.embedded(), "consumer tests run on the embedded default (no REDIS_URL)"
    services = Services.build()
    await services.hub.start()
    publisher = Publisher(services.store, services.transport)
    await publisher.prepare(CATALOG)
    for i in range(3):
        await publisher.publish([(s, 1.0 + i, 1.0, 0.9, 1.1) for s in CATALOG])  # snapshots and recovery exist
    hub = services.hub
    book = GrantBook(hub.limits, 100, 5.0)
    limits = dataclasses.replace(hub.limits, max_subscriptions=MAX_SUBSCRIPTIONS, max_requests_per_s=1_000_000)
    good = Grant(
        GOOD_ID, "good", ENTITLEMENT, limits, 2, origins=frozenset({KEY_ORIGIN}), key_hash=ApiKey.hash(GOOD_KEY)
    )
    expired = Grant(
        EXPIRED_ID,
        "expired",
        Entitlement.everything(),
        limits,
        2,
        expires=time.time() - 10,
        key_hash=ApiKey.hash(EXPIRED_KEY),
    )
    book.grants = {GOOD_ID: good, EXPIRED_ID: expired}
    book._by_hash = {
        good.key_hash: GOOD_ID,
        expired.key_hash: EXPIRED_ID,
        ApiKey.hash(REVOKED_KEY): "key:3",  # a reload raced a revocation: the hash is known, its grant is not
        ApiKey.hash(STALE_KEY): GOOD_ID,  # a stale mapping: by_key's compare_digest must refuse it
    }
    book.loaded = True
    leases = MemoryLeases(30.0)
    gate = Gate(hub, book, leases, Access(anonymous=None, allowed_origins=frozenset({ALLOWED_ORIGIN}), secret=SECRET))
    env = Env(services, gate, leases)

    # No database here (pytest-django blocks it; the gate is never `start`ed, so nothing is
    # loaded from one). Sessions: a cookie of a user without a grant counts as no credential
    # (spec), which is what a lookup that finds nobody returns, so session_grant answers None
    # without asking the session store. Keys not in memory: GrantBook.find_key asks the
    # database whether the key was created a moment ago (`run_db(... .exists())`); the only
    # run_db left once sessions are patched is that one, and it answers "no such key".
    async def no_session(self: GrantBook, session_key: str) -> Grant | None:
        assert len(session_key) <= MAX_CREDENTIAL_CHARS
        env.sessions_asked += 1
        return None

    def no_such_key(executor: object, work: object) -> asyncio.Future[bool]:
        env.db_asked += 1
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        future.set_result(False)
        return future

    monkeypatch.setattr(GrantBook, "session_grant", no_session)
    monkeypatch.setattr(grants_module, "run_db", no_such_key)
    return env


async def close_env(env: Env) -> None:
    await env.services.hub.stop()
    await env.services.layer.flush()
    env.gate.book.executor.shutdown(wait=False)
    env.services.gate.book.executor.shutdown(wait=False)


class Runner:
    """A private event loop, so that hypothesis (synchronous) can drive async examples."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        pending = [t for t in asyncio.all_tasks(self.loop) if not t.done()]
        for task in pending:
            task.cancel()

        async def drain() -> None:
            await asyncio.gather(*pending, return_exceptions=True)

        self.loop.run_until_complete(drain())
        self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        self.loop.close()


@pytest.fixture
def runner() -> Iterator[Runner]:
    r = Runner()
    yield r
    r.close()


def communicator(env: Env, query: bytes, headers: list[tuple[bytes, bytes]]) -> ApplicationCommunicator:
    scope = {
        "type": "websocket",
        "path": "/ws/v1/stream",
        "query_string": query,
        "headers": headers,
        "subprotocols": [],
        "extensions": {"websocket.http.response": {}},
        "state": env.state,
    }
    return ApplicationCommunicator(application, scope)


def decode_reply(message: dict[str, Any]) -> Any:
    assert message["type"] == "websocket.send", message
    if message.get("bytes") is not None:
        return msgpack.unpackb(message["bytes"], raw=False, strict_map_key=False)
    return orjson.loads(message["text"])


# -- 1. the handshake ------------------------------------------------------------------

latin1 = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=255), max_size=40)
credential = st.one_of(
    st.tuples(st.just("label"), st.sampled_from(["good_key", "token_valid"])),  # valid ones, often
    st.tuples(st.just("label"), st.sampled_from(CREDENTIAL_LABELS)),
    st.tuples(st.just("raw"), latin1),
    st.tuples(st.just("raw"), st.integers(513, 5000).map(lambda n: "ms_" + "k" * n)),
    st.tuples(st.just("raw"), st.just("mst_" + "A" * 40 + ":" + "B" * 20)),
)
authorization = st.one_of(
    st.tuples(
        st.just("bearer"),
        st.sampled_from(["Bearer", "bearer", "BEARER", "bEaReR", "Basic", "Token", "", "Bearer:", "Bearer\t"]) | latin1,
        st.sampled_from([" ", "  ", " \t ", "\t", "   \xa0 "]),
        credential,
        st.sampled_from(["", " ", "   ", "\t", "\x85"]),
    ),
    st.tuples(st.just("raw"), st.binary(max_size=80)),
    st.tuples(st.just("raw"), st.sampled_from([b"", b" ", b" " * 300, b"Bearer", b"Bearer ", b"Bearer    "])),
    st.tuples(st.just("raw"), st.integers(1, 20_000).map(lambda n: b"Bearer " + b"\xe9" * n)),
)
hosts = st.one_of(st.just(HOST), st.just("HUB.Example"), st.just(" hub.example "), st.just(""), latin1)
origins = st.one_of(
    st.sampled_from(
        [
            "null",
            ALLOWED_ORIGIN,
            KEY_ORIGIN,
            "http://" + HOST,
            "HTTPS://HUB.EXAMPLE",
            "ws://" + HOST,
            "http://evil.example",
            "http://[::1",
            "http://[",
            "://",
            "",
            ALLOWED_ORIGIN + "/",
            "https://app.example.evil",
        ]
    ),
    latin1,
)
cookies = st.one_of(
    latin1.map(lambda v: "sessionid=" + v),
    latin1,
    st.sampled_from(["sessionid=", "a=b; sessionid=x; sessionid=y", "sessionid=" + "s" * 5000, "=;=;;sessionid"]),
)
header_names = {
    "authorization": st.sampled_from(["authorization", "Authorization", "AUTHORIZATION"]),
    "origin": st.sampled_from(["origin", "Origin"]),
    "cookie": st.sampled_from(["cookie", "Cookie"]),
    "host": st.sampled_from(["host", "Host"]),
}
query_part = st.one_of(
    st.tuples(st.just("token"), credential, st.booleans()),
    st.tuples(st.just("encoding"), st.sampled_from(["msgpack", "json", "xml", "", "JSON", "msgpack%00", "json&x"])),
    st.tuples(st.just("raw"), st.binary(max_size=40)),
    st.tuples(
        st.just("raw"),
        st.sampled_from([b"%", b"%zz", b"%ff%fe", b"token=%ff%fe", b"token", b"token=", b"==", b"&&", b"%%25"]),
    ),
    st.tuples(st.just("raw"), st.integers(1, 20_000).map(lambda n: b"x=" + b"a" * n)),
)


friendly_auth = st.tuples(
    st.just("bearer"),
    st.sampled_from(["Bearer", "bearer"]),
    st.just(" "),
    st.tuples(st.just("label"), st.sampled_from(["good_key", "token_valid", "stale_key"])),
    st.just(""),
)
friendly_origins = st.sampled_from([ALLOWED_ORIGIN, KEY_ORIGIN, "http://" + HOST, "https://evil.example"])


@st.composite
def handshakes(draw: st.DrawFn) -> dict[str, Any]:
    headers: list[tuple[str, Any]]
    query: list[tuple[Any, ...]]
    if draw(st.booleans()):  # one credential, maybe an origin: a handshake near the accepting ones
        headers = [("host", HOST)] if draw(st.booleans()) else []
        if draw(st.booleans()):
            headers.append(("authorization", draw(friendly_auth)))
            query = []
        else:
            query = [("token", draw(friendly_auth)[3], draw(st.booleans()))]
        if draw(st.booleans()):
            headers.append(("origin", draw(friendly_origins)))
        if draw(st.booleans()):
            query.append(("encoding", draw(st.sampled_from(["json", "msgpack"]))))
        if draw(st.booleans()):  # noise that changes nothing
            headers.append((draw(header_names["cookie"]), draw(cookies)))
            headers.append(("user-agent", draw(latin1)))
            query.append(("raw", b"x=" + quote(draw(latin1), safe="").encode()))
        return {"headers": draw(st.permutations(headers)), "query": draw(st.permutations(query)), "separator": b"&"}
    headers = []
    for name, values in (("authorization", authorization), ("origin", origins), ("cookie", cookies), ("host", hosts)):
        for _ in range(draw(st.integers(0, 2))):  # repeated headers: the first one counts
            headers.append((draw(header_names[name]), draw(values)))
    for _ in range(draw(st.integers(0, 2))):
        headers.append((draw(st.sampled_from(["x-forwarded-for", "sec-websocket-key", "user-agent"])), draw(latin1)))
    headers = draw(st.permutations(headers))
    query = draw(st.lists(query_part, max_size=5))
    separator = draw(st.sampled_from([b"&", b";", b"&&"]))
    return {"headers": headers, "query": query, "separator": separator}


def render(env: Env, case: dict[str, Any]) -> tuple[list[tuple[bytes, bytes]], bytes]:
    headers: list[tuple[bytes, bytes]] = []
    for name, value in case["headers"]:
        if name.lower() == "authorization":
            if value[0] == "bearer":
                _, scheme, gap, cred, tail = value
                raw = (scheme + gap + env.resolve(cred) + tail).encode("latin-1")
            else:
                raw = value[1]
        else:
            raw = value.encode("latin-1")
        headers.append((name.lower().encode(), raw))  # ASGI: lower-case names
    parts: list[bytes] = []
    for part in case["query"]:
        if part[0] == "token":
            token = env.resolve(part[1])
            parts.append(b"token=" + (quote(token, safe="") if part[2] else token).encode("latin-1"))
        elif part[0] == "encoding":
            parts.append(b"encoding=" + part[1].encode())
        else:
            parts.append(part[1])
    return headers, case["separator"].join(parts)


def expected(env: Env, headers: list[tuple[bytes, bytes]], query: bytes) -> int | None:
    """The spec's answer: None (accepted), 400 (unknown encoding) or 403."""
    first: dict[str, str] = {}
    for name, value in headers:
        first.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
    params = parse_qs(query.decode("latin-1"))
    if (params.get("encoding") or ["msgpack"])[0] not in ("msgpack", "json"):
        return 400
    scheme, _, bearer = first.get("authorization", "").strip().partition(" ")
    token = (params.get("token") or [""])[0]
    if scheme.lower() == "bearer" and bearer.strip():
        valid = bearer.strip() in env.valid_keys  # Bearer takes a key, not a token
    elif token:
        valid = token in env.valid_tokens
    else:
        valid = False  # anonymous is off; a session cookie without a grant is no credential
    if not valid:
        return 403
    origin = first.get("origin")
    if origin is None or origin in (ALLOWED_ORIGIN, KEY_ORIGIN):
        return None
    host = first.get("host")
    try:
        parts = urlsplit(origin)
    except ValueError:
        return 403
    same = bool(host) and parts.scheme in ("http", "https") and parts.netloc.lower() == (host or "").strip().lower()
    return None if same else 403


async def abandon(comm: ApplicationCommunicator) -> None:
    """After a failed example: end its connection, so that the next examples start clean."""
    with contextlib.suppress(BaseException):
        await comm.send_input({"type": "websocket.disconnect", "code": 1006})
        await comm.wait(timeout=3)
    if not comm.future.done():
        comm.future.cancel()


async def one_handshake(env: Env, headers: list[tuple[bytes, bytes]], query: bytes, want: int | None) -> bool:
    comm = communicator(env, query, headers)
    try:
        return await handshake_on(env, comm, want)
    except BaseException:
        await abandon(comm)
        raise


async def handshake_on(env: Env, comm: ApplicationCommunicator, want: int | None) -> bool:
    await comm.send_input({"type": "websocket.connect"})
    first = await comm.receive_output(timeout=3)
    if want is None:
        assert first["type"] == "websocket.accept", (first, want)
        welcome = decode_reply(await comm.receive_output(timeout=3))
        assert isinstance(welcome, dict) and welcome["type"] == "welcome"
        assert welcome["limits"]["max_subscriptions"] == MAX_SUBSCRIPTIONS  # the key's own limits
        assert set(env.gate.held) == {GOOD_ID} and await env.leases.count(GOOD_ID) == 1
    else:
        assert first["type"] == "websocket.http.response.start", (first, want)
        assert first["status"] == want
        body = await comm.receive_output(timeout=3)
        assert body["type"] == "websocket.http.response.body" and body["body"]
        if want == 403:  # (a 400 names the bad `?encoding=` value as sent, up to 32 characters)
            for credential in env.credentials.values():
                assert credential.encode() not in body["body"] or len(credential) < 8, (
                    "a 403 never repeats a credential"
                )
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(timeout=3)  # re-raises what the consumer raised
    await env.check_idle()
    return want is None


def test_handshake_fuzz(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    env = runner.run(build_env(monkeypatch))
    ran = {"examples": 0, "accepted": 0, "403": 0, "400": 0}

    @settings(
        max_examples=HANDSHAKE_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(handshakes())
    def handshake(case: dict[str, Any]) -> None:
        headers, query = render(env, case)
        want = expected(env, headers, query)
        runner.run(one_handshake(env, headers, query, want))
        ran["examples"] += 1
        ran["accepted" if want is None else str(want)] += 1

    started = time.monotonic()
    try:
        handshake()
    finally:
        runner.run(close_env(env))
    print(
        f"\nhandshake fuzz: {ran} in {time.monotonic() - started:.1f} s; "
        f"session lookups {env.sessions_asked}, database asks {env.db_asked}, gate {env.gate.counts}"
    )
    assert ran["examples"] >= HANDSHAKE_EXAMPLES
    assert ran["accepted"] > 0 and ran["403"] > 0, "both outcomes were reached"


# -- 2. the request path of a key ------------------------------------------------------

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**63), 2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=24),
)
json_values = st.recursive(
    json_scalars,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=10), c, max_size=4),
    max_leaves=10,
)
msgpack_values = st.recursive(
    json_scalars | st.binary(max_size=16),
    lambda c: (
        st.lists(c, max_size=4)
        | st.dictionaries(st.text(max_size=6) | st.integers(-5, 5) | st.booleans() | st.none(), c, max_size=4)
    ),
    max_leaves=10,
)
symbol_names = st.one_of(
    st.sampled_from(ALLOWED_KNOWN + FORBIDDEN_KNOWN + UNKNOWN_VALID + MALFORMED),
    st.sampled_from(ALLOWED_KNOWN + FORBIDDEN_KNOWN).map(str.lower),
    st.text(alphabet="ABCDEFXMSTU:/._-* ", max_size=34),
    st.text(max_size=40),
)
symbol_lists = st.one_of(st.lists(st.one_of(symbol_names, json_scalars), max_size=12), json_values)
throttles = st.one_of(
    st.none(),
    st.integers(-1000, 70_000),
    st.integers(-(2**63), 2**63 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=5),
    st.booleans(),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=2),
)
since_entries = st.one_of(
    st.integers(-5, 2**63 - 1),
    st.fixed_dictionaries(
        {"seq": st.one_of(st.integers(-3, 10**6), st.integers(0, 2**64 - 1), st.text(max_size=3), st.none())},
        optional={"epoch": st.one_of(st.text(max_size=70), st.none(), st.integers(-(2**63), 2**63 - 1))},
    ),
    json_values,
)
since_maps = st.one_of(st.none(), st.dictionaries(symbol_names, since_entries, max_size=5), json_values)
requests = st.fixed_dictionaries(
    {"op": st.one_of(st.sampled_from(["subscribe", "subscribe", "unsubscribe", "list", "ping"]), json_scalars)},
    optional={
        "id": st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=140), json_scalars),
        "symbols": symbol_lists,
        "throttle_ms": throttles,
        "since": since_maps,
        "snapshot": st.one_of(st.booleans(), json_scalars),
        "bars": st.one_of(st.lists(st.sampled_from(["1s", "1m", "2s", ""]), max_size=3), json_values),
    },
)
plain_requests = st.fixed_dictionaries(  # well-formed ones, to reach acks, snapshots and recovery often
    {
        "op": st.sampled_from(["subscribe", "subscribe", "unsubscribe", "list"]),
        "id": st.integers(0, 1000),
        "symbols": st.lists(st.sampled_from(ALLOWED_KNOWN + FORBIDDEN_KNOWN + UNKNOWN_VALID + MALFORMED), max_size=6),
    },
    optional={
        "throttle_ms": st.one_of(st.none(), st.integers(0, 70_000)),
        "since": st.dictionaries(
            st.sampled_from(CATALOG),
            st.one_of(
                st.integers(0, 5), st.fixed_dictionaries({"seq": st.integers(0, 5), "epoch": st.text(max_size=3)})
            ),
            max_size=3,
        ),
        "snapshot": st.booleans(),
        "bars": st.lists(st.sampled_from(["1s", "5s", "1m", "5m", "1h"]), max_size=3),
    },
)
frames = st.one_of(
    st.tuples(st.sampled_from(["json", "msgpack"]), plain_requests),
    st.tuples(st.just("json"), requests | json_values),
    st.tuples(st.just("msgpack"), requests | msgpack_values),
    st.tuples(st.just("text"), st.text(max_size=200)),
    st.tuples(st.just("bytes"), st.binary(max_size=200)),
)


def frame_message(kind: str, value: Any) -> dict[str, Any]:
    if kind == "json":
        return {"type": "websocket.receive", "text": orjson.dumps(value).decode()}
    if kind == "msgpack":
        return {"type": "websocket.receive", "bytes": msgpack.packb(value, use_bin_type=True)}
    if kind == "text":
        return {"type": "websocket.receive", "text": value}
    return {"type": "websocket.receive", "bytes": value}


def check_reply(reply: Any, sent: Any) -> int:
    """A reply (or a frame of ticks) in answer to the request `sent` (decoded, or None);
    how many `forbidden` rejections it was checked for."""
    assert isinstance(reply, dict) and reply.get("type") in REPLY_TYPES, reply
    kind = reply["type"]
    if kind in ("snapshot", "ticks"):
        symbols = {t["symbol"] for t in reply["ticks"]}
        assert all(ENTITLEMENT.allows(s) for s in symbols), f"ticks of a symbol not entitled: {symbols}"
    if kind == "bars":
        symbols = {b["symbol"] for b in reply["bars"]}
        assert all(ENTITLEMENT.allows(s) for s in symbols), f"bars of a symbol not entitled: {symbols}"
    if kind == "subscriptions":
        assert all(ENTITLEMENT.allows(s["symbol"]) for s in reply["subscriptions"]), reply
    if kind == "ack" and reply.get("op") == "subscribe":
        assert all(ENTITLEMENT.allows(s) for s in reply["symbols"]), reply
        raws = sent.get("symbols") if isinstance(sent, dict) else None
        forbidden = {normalize(raw) for raw in (raws if isinstance(raws, list) else [])} & set(FORBIDDEN_KNOWN)
        for symbol in forbidden:
            assert reply["rejected"].get(symbol) == "forbidden", (symbol, reply)
        return len(forbidden)
    return 0


async def one_session(env: Env, encoding: str, sent_frames: list[tuple[str, Any]]) -> Counter[str]:
    comm = communicator(env, f"encoding={encoding}".encode(), [(b"authorization", b"Bearer " + GOOD_KEY.encode())])
    try:
        return await session_on(env, comm, sent_frames)
    except BaseException:
        await abandon(comm)
        raise


async def session_on(env: Env, comm: ApplicationCommunicator, sent_frames: list[tuple[str, Any]]) -> Counter[str]:
    await comm.send_input({"type": "websocket.connect"})
    assert (await comm.receive_output(timeout=3))["type"] == "websocket.accept"
    assert decode_reply(await comm.receive_output(timeout=3))["type"] == "welcome"
    (conn,) = env.services.hub.connections
    seen: Counter[str] = Counter()
    for i, (kind, value) in enumerate(sent_frames):
        message = frame_message(kind, value)
        try:
            sent = decode_request(message.get("text"), message.get("bytes"))
        except BadFrame:
            sent = None
        await comm.send_input(message)
        marker = f"\x00sync-{i}"
        await comm.send_input(
            {"type": "websocket.receive", "text": orjson.dumps({"op": "ping", "id": marker}).decode()}
        )
        responses = 0
        while True:
            out = await comm.receive_output(timeout=3)
            reply = decode_reply(out)  # a close here (1009, 1008, 1013...) fails: none is expected
            if reply.get("type") == "pong" and reply.get("id") == marker:
                break
            seen["forbidden checked"] += check_reply(reply, sent)
            seen[reply["type"]] += 1
            responses += reply["type"] in RESPONSE_TYPES
        assert responses == 1, f"one response per request, got {responses} for {kind} {value!r:.200}"
        assert not conn.closed
        assert all(ENTITLEMENT.allows(s) for s in conn.subscriptions), conn.subscriptions
        assert len(conn.subscriptions) <= MAX_SUBSCRIPTIONS
    await comm.send_input({"type": "websocket.disconnect", "code": 1000})
    await comm.wait(timeout=3)
    await env.check_idle()
    return seen


def test_request_fuzz(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    env = runner.run(build_env(monkeypatch))
    ran: Counter[str] = Counter()

    @settings(
        max_examples=REQUEST_EXAMPLES,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(st.sampled_from(["json", "msgpack"]), st.lists(frames, min_size=1, max_size=12))
    def session(encoding: str, sent_frames: list[tuple[str, Any]]) -> None:
        ran.update(runner.run(one_session(env, encoding, sent_frames)))
        ran["examples"] += 1
        ran["frames"] += len(sent_frames)

    started = time.monotonic()
    try:
        session()
    finally:
        runner.run(close_env(env))
    print(f"\nrequest fuzz: {dict(ran)} in {time.monotonic() - started:.1f} s; gate {env.gate.counts}")
    assert ran["examples"] >= REQUEST_EXAMPLES


# -- the key comparison ----------------------------------------------------------------


def test_key_lookup_compares_in_constant_time(runner: Runner, monkeypatch: pytest.MonkeyPatch) -> None:
    env = runner.run(build_env(monkeypatch))
    try:
        book = env.gate.book
        with mock.patch.object(hmac, "compare_digest", wraps=hmac.compare_digest) as spy:
            assert book.by_key(GOOD_KEY) is book.grants[GOOD_ID]
            spy.assert_called_with(ApiKey.hash(GOOD_KEY), ApiKey.hash(GOOD_KEY))
            spy.reset_mock()
            assert book.by_key(STALE_KEY) is None, "a hash that maps to another key's grant is refused"
            spy.assert_called_once_with(ApiKey.hash(GOOD_KEY), ApiKey.hash(STALE_KEY))
    finally:
        runner.run(close_env(env))
