"""Bar math (core/bars.py) and the embedded store's bars: alignment, OHLCV, final bars by
the next tick and by the timer, late ticks, what is kept; the encoding of bars."""

from __future__ import annotations

import random

import msgpack
import orjson
import pytest

from marketstream.core.bars import (
    INTERVALS,
    NS,
    Bar,
    BarBook,
    EncodedBar,
    bar_start,
    parse_intervals,
)
from marketstream.core.codec import CODEC
from marketstream.core.store import MemoryStore
from marketstream.core.tick import Draft

HOUR = 1_699_999_200  # 1_700_000_000 - 800: a whole hour, UTC


def ns(seconds: float) -> int:
    return round(seconds * NS)


def update(book: BarBook, symbol: str, at: float, price: float, size: float = 1.0) -> list[Bar]:
    changed: dict[tuple[str, int], Bar] = {}
    book.update(symbol, ns(at), price, size, changed)
    return [b.copy() for b in changed.values()]


def recompute(
    ticks: list[tuple[int, float, float]], seconds: int
) -> list[tuple[int, float, float, float, float, float, int]]:
    """Bars from scratch: (start, o, h, l, c, v, n) per start, ticks in order."""
    bars: dict[int, list[float]] = {}
    for ts, price, size in ticks:
        start = ts // NS - ts // NS % seconds
        bar = bars.get(start)
        if bar is None:
            bars[start] = [price, price, price, price, size, 1]
        else:
            bar[1], bar[2], bar[3] = max(bar[1], price), min(bar[2], price), price
            bar[4] += size
            bar[5] += 1
    return [(s, b[0], b[1], b[2], b[3], b[4], int(b[5])) for s, b in sorted(bars.items())]


def test_bars_are_aligned_to_the_interval_in_utc() -> None:
    assert HOUR % 3600 == 0
    ts = ns(HOUR + 3599.999)
    assert bar_start(ts, 1) == HOUR + 3599
    assert bar_start(ts, 5) == HOUR + 3595
    assert bar_start(ts, 60) == HOUR + 3540
    assert bar_start(ts, 300) == HOUR + 3300
    assert bar_start(ts, 3600) == HOUR
    assert bar_start(ns(HOUR + 3600), 3600) == HOUR + 3600, "the end of a bar is the start of the next"


def test_a_bar_is_open_high_low_close_volume_count_of_its_ticks() -> None:
    book = BarBook()
    for at, price, size in [(0.1, 10.0, 1.0), (0.2, 12.5, 2.0), (0.3, 9.0, 0.5), (0.9, 11.0, 3.0)]:
        changed = update(book, "AAPL", HOUR + at, price, size)
    assert [b.interval for b in changed] == list(INTERVALS), "each tick changes the bar of every interval"
    bar = changed[0]
    assert (bar.start, bar.open, bar.high, bar.low, bar.close, bar.volume, bar.count, bar.final) == (
        HOUR,
        10.0,
        12.5,
        9.0,
        11.0,
        6.5,
        4,
        False,
    )
    assert bar.as_dict() == {
        "symbol": "AAPL",
        "interval": "1s",
        "start": HOUR * NS,
        "open": 10.0,
        "high": 12.5,
        "low": 9.0,
        "close": 11.0,
        "volume": 6.5,
        "count": 4,
        "final": False,
    }


def test_a_tick_of_a_later_start_makes_the_bar_final_and_opens_the_next() -> None:
    book = BarBook()
    update(book, "AAPL", HOUR + 0.5, 10.0)
    changed = update(book, "AAPL", HOUR + 1.2, 11.0)
    assert [(b.interval, b.start, b.final, b.count) for b in changed] == [
        ("1s", HOUR, True, 1),
        ("1s", HOUR + 1, False, 1),
        ("5s", HOUR, False, 2),
        ("1m", HOUR, False, 2),
        ("5m", HOUR, False, 2),
        ("1h", HOUR, False, 2),
    ], "the final bar comes before the next open one"
    assert [b.start for b in book.recent("AAPL", "1s", 10)] == [HOUR, HOUR + 1]


def test_finalize_ends_bars_on_time_without_a_tick_and_only_once() -> None:
    book = BarBook()
    update(book, "AAPL", HOUR + 0.5, 10.0)
    update(book, "MSFT", HOUR + 0.5, 20.0)
    assert book.finalize(["AAPL"], ns(HOUR + 0.999)) == [], "not before the interval ends"
    done = book.finalize(["AAPL", "MSFT", "IBM"], ns(HOUR + 1))
    assert [(u.symbol, [(b.interval, b.final) for b in u.bars]) for u in done] == [
        ("AAPL", [("1s", True)]),
        ("MSFT", [("1s", True)]),
    ]
    assert book.finalize(["AAPL", "MSFT"], ns(HOUR + 2)) == [], "a final bar is made final once"
    done = book.finalize(["AAPL"], ns(HOUR + 3600))
    assert [b.interval for b in done[0].bars] == ["5s", "1m", "5m", "1h"]
    changed = update(book, "AAPL", HOUR + 3600.5, 11.0)
    assert all(not b.final for b in changed), "the next tick opens new bars; nothing to end twice"
    assert [b.count for b in book.recent("AAPL", "1h", 5)] == [1, 1]


def test_late_ticks_count_in_no_bar() -> None:
    book = BarBook()
    update(book, "AAPL", HOUR + 5.5, 10.0)
    book.finalize(["AAPL"], ns(HOUR + 6))
    changed = update(book, "AAPL", HOUR + 5.9, 99.0)  # another publisher's, stamped before the end
    assert [b.interval for b in changed] == ["5s", "1m", "5m", "1h"], "late for the final 1s bar only"
    changed = update(book, "AAPL", HOUR + 7.0, 11.0)
    changed = update(book, "AAPL", HOUR + 6.5, 98.0)  # older than the open 1s bar
    assert [b.interval for b in changed] == ["5s", "1m", "5m", "1h"]
    assert book.late == 2
    assert [(b.start, b.count, b.high) for b in book.recent("AAPL", "1s", 5)] == [
        (HOUR + 5, 1, 10.0),
        (HOUR + 7, 1, 11.0),
    ]


def test_the_last_keep_final_bars_are_kept_then_the_open_one() -> None:
    book = BarBook(keep=3)
    for i in range(6):
        update(book, "AAPL", HOUR + i + 0.5, float(i))
    recent = book.recent("AAPL", "1s", 10)
    assert [(b.start - HOUR, b.final) for b in recent] == [(2, True), (3, True), (4, True), (5, False)]
    assert [b.start - HOUR for b in book.recent("AAPL", "1s", 2)] == [4, 5]
    assert book.recent("AAPL", "1s", 0) == [] and book.recent("IBM", "1s", 5) == []
    nothing = BarBook(keep=0)
    update(nothing, "AAPL", HOUR + 0.5, 1.0)
    update(nothing, "AAPL", HOUR + 1.5, 1.0)
    assert [b.final for b in nothing.recent("AAPL", "1s", 10)] == [False], "keep 0: the open bar only"


def test_bars_match_a_recomputation_for_every_interval() -> None:
    rnd = random.Random(7)
    book = BarBook(keep=10_000)
    ticks = []
    at = HOUR + 3000.0
    for _ in range(3000):
        at += rnd.expovariate(5.0)
        price, size = round(rnd.uniform(90, 110), 2), float(rnd.randint(1, 500))
        ticks.append((ns(at), price, size))
        book.update("X", ns(at), price, size, {})
    for interval, seconds in INTERVALS.items():
        got = [(b.start, b.open, b.high, b.low, b.close, b.volume, b.count) for b in book.recent("X", interval, 10_000)]
        assert got == recompute(ticks, seconds), interval


async def test_the_memory_store_computes_bars_as_it_assigns_seq() -> None:
    store = MemoryStore(bars_keep=100)

    def draft(symbol: str, at: float, price: float) -> Draft:
        return Draft.encode({"symbol": symbol, "ts": ns(at), "price": price, "size": 2.0, "bid": 0.0, "ask": 0.0})

    ticks, updates = store.append_with_bars([draft("AAPL", HOUR + 0.1, 1.0), draft("MSFT", HOUR + 0.2, 2.0)])
    assert [t.seq for t in ticks] == [1, 1]
    assert [(u.symbol, len(u.bars)) for u in updates] == [("AAPL", 5), ("MSFT", 5)], "one update per symbol"
    ticks, updates = store.append_with_bars([draft("AAPL", HOUR + 1.1, 3.0), draft("AAPL", HOUR + 1.2, 4.0)])
    (aapl,) = updates
    assert [(b.interval, b.start - HOUR, b.count, b.final) for b in aapl.bars][:2] == [
        ("1s", 0, 1, True),
        ("1s", 1, 2, False),
    ]
    aapl.bars[1].count = 99
    assert (await store.bars("AAPL", "1s", 5))[-1].count == 2, "an update is a copy: the book is not changed by it"
    assert await store.finalize_bars(["AAPL", "MSFT"], ns(HOUR + 2)) == 2
    assert [b.final for b in await store.bars("AAPL", "1s", 5)] == [True, True]
    opened = await store.open_bars(["AAPL", "IBM"])
    assert list(opened) == ["AAPL"] and [b.interval for b in opened["AAPL"]] == list(INTERVALS)
    await store.append([Draft("IBM", b"\x81", b"{")])  # a draft without a price counts in no bar
    assert await store.open_bars(["IBM"]) == {}


def test_intervals_of_a_request() -> None:
    assert parse_intervals(["1m", "1s", "1m"]) == ("1s", "1m"), "each once, shortest first"
    assert parse_intervals([]) == ()
    for bad in ["1s", ["2s"], [1], ["1S"], None]:
        with pytest.raises(ValueError):
            parse_intervals(bad)


def test_an_encoded_bar_and_the_bars_frame() -> None:
    bar = Bar("EUR/USD", "1m", HOUR, 1.1, 1.2, 1.0, 1.15, 3, 2)  # integer volume from Redis's msgpack
    encoded = EncodedBar(bar)
    assert msgpack.unpackb(encoded.msgpack) == bar.as_dict()
    assert orjson.loads(encoded.json) == bar.as_dict()
    assert isinstance(msgpack.unpackb(encoded.msgpack)["volume"], float), "numbers are floats whatever came"
    frame = msgpack.unpackb(CODEC["msgpack"].bars([encoded, encoded]))
    assert frame == {"type": "bars", "bars": [bar.as_dict(), bar.as_dict()]}
    assert orjson.loads(CODEC["json"].bars([encoded])) == {"type": "bars", "bars": [bar.as_dict()]}
    final = EncodedBar(Bar("EUR/USD", "1m", HOUR, 1.1, 1.2, 1.0, 1.15, 3, 2, True))
    more = EncodedBar(Bar("EUR/USD", "1m", HOUR, 1.1, 1.2, 1.0, 1.15, 3, 3))
    assert encoded.key == final.key == more.key
    assert encoded.rank < more.rank < final.rank, "a final bar outranks every open version"
