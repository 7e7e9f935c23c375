"""Entitlements: which symbols a key may see, compiled once per key, checked per subscribe.

A pattern is an exact symbol (`AAPL`), a prefix wildcard (`FX:*`, `BTC/*`: every symbol
that starts with what comes before the `*`), or `*` (every symbol). Patterns are
normalized like symbols (upper-cased). The check is a set lookup plus one `startswith`
per distinct prefix; it runs when a subscribe is handled, never per tick.
"""

from __future__ import annotations

from collections.abc import Iterable

from marketstream.core.symbols import normalize


class Entitlement:
    """A compiled set of patterns. `Entitlement.everything()` allows every symbol."""

    __slots__ = ("_all", "_exact", "_prefixes", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        """Raises ValueError naming a pattern that is neither a symbol, `PREFIX*` nor `*`."""
        exact: set[str] = set()
        prefixes: set[str] = set()
        every = False
        kept: list[str] = []
        for raw in patterns:
            pattern = raw.strip().upper()
            if not pattern:
                continue
            if pattern == "*":
                every = True
            elif pattern.endswith("*"):
                prefix = pattern[:-1]
                if "*" in prefix or normalize(prefix) is None:
                    raise ValueError(f"entitlement pattern {raw!r}: expected SYMBOL, PREFIX* or *")
                prefixes.add(prefix)
            else:
                symbol = normalize(pattern)
                if symbol is None:
                    raise ValueError(f"entitlement pattern {raw!r}: expected SYMBOL, PREFIX* or *")
                exact.add(symbol)
            kept.append(pattern)
        self.patterns = tuple(kept)
        self._all = every
        self._exact = frozenset(exact)
        # a prefix covered by a shorter one adds nothing
        self._prefixes = tuple(sorted(p for p in prefixes if not any(p != q and p.startswith(q) for q in prefixes)))

    @classmethod
    def everything(cls) -> Entitlement:
        return cls(["*"])

    @classmethod
    def parse(cls, text: str) -> Entitlement:
        """From a comma-separated list (`AAPL,MSFT,FX:*`), as settings and commands give it."""
        return cls(text.split(","))

    def allows(self, symbol: str) -> bool:
        """Whether the (normalized) `symbol` is granted."""
        return self._all or symbol in self._exact or symbol.startswith(self._prefixes)

    def __repr__(self) -> str:
        return f"Entitlement({','.join(self.patterns)!r})"
