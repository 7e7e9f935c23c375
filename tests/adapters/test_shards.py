"""The shard rule and REDIS_URL's forms (marketstream.adapters.shards); no Redis needed."""

from __future__ import annotations

import binascii

import pytest

from marketstream.adapters.layer import shard_of_channel
from marketstream.adapters.shards import layer_host, parse_address, parse_urls, redact, shard_of
from marketstream.adapters.transport import group_name, symbol_of_group


def test_shard_of_is_crc32_of_the_upper_cased_symbol() -> None:
    for symbol in ("AAPL", "EUR/USD", "btc/usd", "X_Y:Z"):
        assert shard_of(symbol, 3) == binascii.crc32(symbol.upper().encode()) % 3
    assert shard_of("AAPL", 1) == 0
    assert {shard_of(f"SYM{i:04d}", 4) for i in range(100)} == {0, 1, 2, 3}


@pytest.mark.parametrize("symbol", ["AAPL", "EUR/USD", "A_B", "X:Y_/Z__", "BRK.B", "_s", "__"])
def test_group_channels_route_to_their_symbols_shard(symbol: str) -> None:
    assert symbol_of_group(group_name("tick", symbol)) == symbol
    for prefix in ("tick", "bars"):
        channel = f"ms__group__{group_name(prefix, symbol)}"
        assert shard_of_channel(channel, 5) == shard_of(symbol, 5)


def test_several_urls_are_shards_in_order() -> None:
    shards = parse_urls(" redis://10.0.1.2:6379/0 , redis://:secret@10.0.2.2:6379/1,")
    assert [(s.index, s.url, s.sentinel) for s in shards] == [
        (0, "redis://10.0.1.2:6379/0", False),
        (1, "redis://:secret@10.0.2.2:6379/1", False),
    ]
    assert shards[1].shown == "redis://:***@10.0.2.2:6379/1"
    assert parse_urls("") == []


def test_sentinel_url() -> None:
    url = "redis+sentinel://:pw@10.0.3.2:26379/shard1/2?sentinel=10.0.4.2:26379&sentinel=[::1]:26380&socket_timeout=0.5"
    address = parse_address(url, 1)
    assert address.sentinel and address.index == 1
    assert address.sentinels == [("10.0.3.2", 26379), ("10.0.4.2", 26379), ("::1", 26380)]
    assert (address.service, address.db, address.password) == ("shard1", 2, "pw")
    host = layer_host(address, 100)
    assert host["master_name"] == "shard1" and host["sentinels"] == address.sentinels
    assert host["socket_timeout"] is None and host["db"] == 2 and host["password"] == "pw"
    assert host["sentinel_kwargs"]["socket_timeout"] == 0.5
    assert "pw" not in address.shown
    assert parse_address("redis+sentinel://10.0.3.2:26379").service == "mymaster"


@pytest.mark.parametrize(
    "url", ["http://x:1", "redis+sentinel://", "redis+sentinel://h:1/s?sentinel=nohost", "10.0.0.1:6379"]
)
def test_bad_urls_say_what_is_wrong(url: str) -> None:
    with pytest.raises(ValueError, match=r"REDIS_URL|HOST:PORT"):
        parse_address(url)


def test_redact_keeps_urls_without_password() -> None:
    assert redact("redis://h:1/0") == "redis://h:1/0"
    assert redact("redis://user:pw@h:1/0") == "redis://user:***@h:1/0"
