"""The default demo universe: realistic instruments with a starting price, a tick size
(price increment), a typical spread and a daily volatility."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Instrument:
    symbol: str
    price: float
    increment: float  # price step
    spread: float  # typical spread, in increments
    volatility: float  # daily, as a fraction of price
    lot: int  # typical trade size


def _equity(symbol: str, price: float, vol: float = 0.02) -> Instrument:
    return Instrument(symbol, price, 0.01, 1, vol, 100)


def _fx(symbol: str, price: float) -> Instrument:
    increment = 0.001 if price > 20 else 0.00001
    return Instrument(symbol, price, increment, 12, 0.006, 100_000)


def _crypto(symbol: str, price: float, increment: float) -> Instrument:
    return Instrument(symbol, price, increment, 4, 0.04, 1)


DEFAULT_UNIVERSE: tuple[Instrument, ...] = (
    _equity("AAPL", 227.50), _equity("MSFT", 421.30), _equity("NVDA", 138.20, 0.035),
    _equity("AMZN", 197.10), _equity("GOOGL", 168.40), _equity("META", 563.90),
    _equity("TSLA", 251.40, 0.04), _equity("BRK.B", 458.20, 0.01), _equity("JPM", 221.70),
    _equity("V", 289.40, 0.012), _equity("UNH", 578.30), _equity("XOM", 118.90),
    _equity("JNJ", 156.20, 0.01), _equity("WMT", 80.50, 0.012), _equity("MA", 499.60),
    _equity("PG", 167.80, 0.01), _equity("HD", 392.10), _equity("COST", 889.70),
    _equity("AVGO", 164.30, 0.03), _equity("KO", 63.40, 0.008), _equity("PEP", 158.90, 0.01),
    _equity("NFLX", 748.20, 0.025), _equity("AMD", 142.60, 0.035), _equity("INTC", 22.40, 0.03),
    _equity("CSCO", 57.10, 0.012), _equity("DIS", 96.80), _equity("BAC", 41.90),
    _equity("ORCL", 170.20), _equity("CRM", 294.50), _equity("SPY", 584.30, 0.008),
    _equity("QQQ", 503.10, 0.01),
    _fx("EUR/USD", 1.08450), _fx("GBP/USD", 1.29870), _fx("USD/JPY", 151.420),
    _fx("USD/CHF", 0.86720), _fx("AUD/USD", 0.65910), _fx("USD/CAD", 1.38640),
    _fx("NZD/USD", 0.59820), _fx("EUR/GBP", 0.83510), _fx("EUR/JPY", 164.210),
    _crypto("BTC/USD", 67420.0, 0.5), _crypto("ETH/USD", 2634.0, 0.05),
    _crypto("SOL/USD", 168.40, 0.01), _crypto("XRP/USD", 0.5240, 0.0001),
    _crypto("ADA/USD", 0.3510, 0.0001), _crypto("DOGE/USD", 0.1620, 0.00001),
    _crypto("LTC/USD", 72.10, 0.01), _crypto("AVAX/USD", 27.30, 0.01),
)  # fmt: skip


def generated(count: int, prefix: str = "SYM") -> tuple[Instrument, ...]:
    """`count` made-up equities named PREFIX0000, PREFIX0001, ... (for load tests)."""
    width = max(4, len(str(count - 1)))
    return tuple(_equity(f"{prefix}{i:0{width}d}", 20.0 + (i * 7.3) % 480) for i in range(count))


def by_symbols(symbols: list[str]) -> tuple[Instrument, ...]:
    """Instruments for the given symbols: from the default universe where listed, else made up."""
    known = {i.symbol: i for i in DEFAULT_UNIVERSE}
    return tuple(known.get(s) or _equity(s, 20.0 + (sum(map(ord, s)) * 7.3) % 480) for s in symbols)
