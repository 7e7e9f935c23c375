"""Close codes: PROTOCOL.md's numbers, in one place."""

from __future__ import annotations

from marketstream.core.closes import Close


def test_close_codes_are_the_protocols() -> None:
    assert {c.name: int(c) for c in Close} == {
        "NORMAL": 1000,
        "GOING_AWAY": 1001,
        "POLICY_VIOLATION": 1008,
        "TOO_BIG": 1009,
        "INTERNAL_ERROR": 1011,
        "SERVICE_RESTART": 1012,
        "TRY_AGAIN_LATER": 1013,
        "KEY_OVER_LIMIT": 4001,
        "KEY_REVOKED": 4003,
    }


def test_a_close_code_is_an_int() -> None:
    assert isinstance(Close.TRY_AGAIN_LATER, int) and int(Close.TRY_AGAIN_LATER) == 1013
    assert Close(1009) is Close.TOO_BIG
