"""The default demo universe: realistic instruments with a name, a kind, a starting price
(which is also their reference price: the simulation's previous close), a tick size (price
increment), a typical spread and a daily volatility."""

from __future__ import annotations

from dataclasses import dataclass

from marketstream.core.symbols import SymbolInfo


@dataclass(frozen=True)
class Instrument:
    symbol: str
    price: float  # where the random walk starts; also the reference price of change and % change
    increment: float  # price step
    spread: float  # typical spread, in increments
    volatility: float  # daily, as a fraction of price
    lot: int  # typical trade size
    name: str = ""
    kind: str = "equity"  # equity, etf, fx, crypto

    def info(self) -> SymbolInfo:
        """What the catalog says of it. A simulated walk starts at `price` each time its feed
        starts, so `price` is its reference: the previous session's close for equities,
        the first price of the day for FX and crypto (a real feed would publish those)."""
        return SymbolInfo(self.name or self.symbol, self.kind, self.price)


def _equity(symbol: str, price: float, name: str, vol: float = 0.02, kind: str = "equity") -> Instrument:
    return Instrument(symbol, price, 0.01, 1, vol, 100, name, kind)


def _fx(symbol: str, price: float, name: str) -> Instrument:
    increment = 0.001 if price > 20 else 0.00001
    return Instrument(symbol, price, increment, 12, 0.006, 100_000, name, "fx")


def _crypto(symbol: str, price: float, increment: float, name: str) -> Instrument:
    return Instrument(symbol, price, increment, 4, 0.04, 1, name, "crypto")


DEFAULT_UNIVERSE: tuple[Instrument, ...] = (
    _equity("AAPL", 227.50, "Apple Inc."), _equity("MSFT", 421.30, "Microsoft Corp."),
    _equity("NVDA", 138.20, "NVIDIA Corp.", 0.035), _equity("AMZN", 197.10, "Amazon.com Inc."),
    _equity("GOOGL", 168.40, "Alphabet Inc. Class A"), _equity("META", 563.90, "Meta Platforms Inc."),
    _equity("TSLA", 251.40, "Tesla Inc.", 0.04), _equity("BRK.B", 458.20, "Berkshire Hathaway Inc. Class B", 0.01),
    _equity("JPM", 221.70, "JPMorgan Chase & Co."), _equity("V", 289.40, "Visa Inc.", 0.012),
    _equity("UNH", 578.30, "UnitedHealth Group Inc."), _equity("XOM", 118.90, "Exxon Mobil Corp."),
    _equity("JNJ", 156.20, "Johnson & Johnson", 0.01), _equity("WMT", 80.50, "Walmart Inc.", 0.012),
    _equity("MA", 499.60, "Mastercard Inc."), _equity("PG", 167.80, "Procter & Gamble Co.", 0.01),
    _equity("HD", 392.10, "Home Depot Inc."), _equity("COST", 889.70, "Costco Wholesale Corp."),
    _equity("AVGO", 164.30, "Broadcom Inc.", 0.03), _equity("KO", 63.40, "Coca-Cola Co.", 0.008),
    _equity("PEP", 158.90, "PepsiCo Inc.", 0.01), _equity("NFLX", 748.20, "Netflix Inc.", 0.025),
    _equity("AMD", 142.60, "Advanced Micro Devices Inc.", 0.035), _equity("INTC", 22.40, "Intel Corp.", 0.03),
    _equity("CSCO", 57.10, "Cisco Systems Inc.", 0.012), _equity("DIS", 96.80, "Walt Disney Co."),
    _equity("BAC", 41.90, "Bank of America Corp."), _equity("ORCL", 170.20, "Oracle Corp."),
    _equity("CRM", 294.50, "Salesforce Inc."), _equity("SPY", 584.30, "SPDR S&P 500 ETF Trust", 0.008, "etf"),
    _equity("QQQ", 503.10, "Invesco QQQ Trust", 0.01, "etf"),
    _fx("EUR/USD", 1.08450, "Euro / US Dollar"), _fx("GBP/USD", 1.29870, "British Pound / US Dollar"),
    _fx("USD/JPY", 151.420, "US Dollar / Japanese Yen"), _fx("USD/CHF", 0.86720, "US Dollar / Swiss Franc"),
    _fx("AUD/USD", 0.65910, "Australian Dollar / US Dollar"), _fx("USD/CAD", 1.38640, "US Dollar / Canadian Dollar"),
    _fx("NZD/USD", 0.59820, "New Zealand Dollar / US Dollar"), _fx("EUR/GBP", 0.83510, "Euro / British Pound"),
    _fx("EUR/JPY", 164.210, "Euro / Japanese Yen"),
    _crypto("BTC/USD", 67420.0, 0.5, "Bitcoin / US Dollar"), _crypto("ETH/USD", 2634.0, 0.05, "Ether / US Dollar"),
    _crypto("SOL/USD", 168.40, 0.01, "Solana / US Dollar"), _crypto("XRP/USD", 0.5240, 0.0001, "XRP / US Dollar"),
    _crypto("ADA/USD", 0.3510, 0.0001, "Cardano / US Dollar"),
    _crypto("DOGE/USD", 0.1620, 0.00001, "Dogecoin / US Dollar"),
    _crypto("LTC/USD", 72.10, 0.01, "Litecoin / US Dollar"), _crypto("AVAX/USD", 27.30, 0.01, "Avalanche / US Dollar"),
)  # fmt: skip


def generated(count: int, prefix: str = "SYM") -> tuple[Instrument, ...]:
    """`count` made-up equities named PREFIX0000, PREFIX0001, ... (for load tests)."""
    width = max(4, len(str(count - 1)))
    return tuple(
        _equity(f"{prefix}{i:0{width}d}", 20.0 + (i * 7.3) % 480, f"Generated equity {i}") for i in range(count)
    )


def by_symbols(symbols: list[str]) -> tuple[Instrument, ...]:
    """Instruments for the given symbols: from the default universe where listed, else made up."""
    known = {i.symbol: i for i in DEFAULT_UNIVERSE}
    return tuple(known.get(s) or _equity(s, 20.0 + (sum(map(ord, s)) * 7.3) % 480, s) for s in symbols)
