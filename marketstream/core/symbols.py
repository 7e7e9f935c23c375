"""Symbol names: validation and normalization (PROTOCOL.md, Semantics); what the catalog
says about a symbol (`SymbolInfo`)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_SYMBOL = re.compile(r"[A-Z0-9.\-/:_]{1,32}")


def normalize(value: object) -> str | None:
    """Return the upper-cased symbol, or None when `value` is not a valid symbol.

    Valid: a string of 1 to 32 characters of ``A-Z 0-9 . - / : _`` after upper-casing.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= 32:
        return None
    upper = value.upper()
    return upper if _SYMBOL.fullmatch(upper) else None


@dataclass(frozen=True, slots=True)
class SymbolInfo:
    """What a publisher says about a symbol, for the catalog (PROTOCOL.md, HTTP): `name`
    for people, `kind` (`equity`, `etf`, `fx`, `crypto`, ...) and `reference`, the price
    that change and % change are measured from (the previous session's close, or the
    first price of the day for markets without sessions; None when there is none)."""

    name: str
    kind: str
    reference: float | None = None

    def as_dict(self) -> dict[str, str | float | None]:
        return {"name": self.name, "kind": self.kind, "reference": self.reference}

    @classmethod
    def from_dict(cls, value: object) -> SymbolInfo | None:
        """The info of a stored map, or None when it is not one."""
        if not isinstance(value, dict):
            return None
        name, kind, reference = value.get("name"), value.get("kind"), value.get("reference")
        if not isinstance(name, str) or not isinstance(kind, str):
            return None
        if isinstance(reference, bool) or not isinstance(reference, int | float | None):
            return None
        return cls(name, kind, float(reference) if reference is not None else None)
