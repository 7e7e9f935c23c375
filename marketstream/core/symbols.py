"""Symbol names: validation and normalization (PROTOCOL.md, Semantics)."""

from __future__ import annotations

import re

_SYMBOL = re.compile(r"[A-Z0-9.\-/:_]{1,32}")


def normalize(value: object) -> str | None:
    """Return the upper-cased symbol, or None when `value` is not a valid symbol.

    Valid: a string of 1 to 32 characters of ``A-Z 0-9 . - / : _`` after upper-casing.
    """
    if not isinstance(value, str) or not 1 <= len(value) <= 32:
        return None
    upper = value.upper()
    return upper if _SYMBOL.fullmatch(upper) else None
