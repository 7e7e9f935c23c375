"""Membership: a symbol is joined on the transport once per process while it is routed."""

from __future__ import annotations

import asyncio

import pytest

from marketstream.core.membership import Membership
from tests.unit.core.fakes import FakeTransport, settle


def make(routed: set[str]) -> tuple[Membership, FakeTransport]:
    transport = FakeTransport()
    return Membership(transport, routed.__contains__), transport


async def test_join_joins_each_routed_symbol_once() -> None:
    membership, transport = make({"AAPL", "MSFT"})
    await membership.join(["AAPL", "MSFT", "IBM"])
    await membership.join(["AAPL"])
    assert transport.joins == ["AAPL", "MSFT"], "IBM is not routed: not joined"
    assert membership.joined == {"AAPL", "MSFT"}


async def test_concurrent_joins_of_a_symbol_join_it_once() -> None:
    membership, transport = make({"AAPL"})
    gate = asyncio.Event()

    async def slow(symbol: str) -> None:
        await gate.wait()

    transport.on_join = slow
    first = asyncio.create_task(membership.join(["AAPL"]))
    second = asyncio.create_task(membership.join(["AAPL"]))
    await settle()
    assert not first.done() and not second.done(), "the second waits for the first"
    gate.set()
    await asyncio.gather(first, second)
    assert transport.joins == ["AAPL"]


async def test_a_symbol_unrouted_while_waiting_is_not_joined() -> None:
    routed = {"AAPL"}
    membership, transport = make(routed)
    async with membership._lock("AAPL"):  # another join or leave of AAPL is in progress
        task = asyncio.create_task(membership.join(["AAPL"]))
        await settle()
        routed.clear()
    await task
    assert transport.joins == [] and membership.joined == set()


async def test_a_failed_join_raises_and_can_be_retried() -> None:
    membership, transport = make({"AAPL", "MSFT"})
    transport.fail_join = {"MSFT"}
    with pytest.raises(ConnectionError):
        await membership.join(["AAPL", "MSFT"])
    assert membership.joined == {"AAPL"}
    transport.fail_join = set()
    await membership.join(["MSFT"])
    assert membership.joined == {"AAPL", "MSFT"}


async def test_leave_soon_leaves_a_symbol_no_longer_routed() -> None:
    routed = {"AAPL"}
    membership, transport = make(routed)
    await membership.join(["AAPL"])
    routed.clear()
    membership.leave_soon("AAPL")
    assert membership.joined == {"AAPL"}, "in a task of its own"
    await settle()
    assert transport.leaves == ["AAPL"] and membership.joined == set()
    assert membership._leaving == set()


async def test_leave_soon_keeps_a_symbol_routed_again_by_then() -> None:
    routed = {"AAPL"}
    membership, transport = make(routed)
    await membership.join(["AAPL"])
    routed.clear()
    membership.leave_soon("AAPL")
    routed.add("AAPL")
    await settle()
    assert transport.leaves == [] and membership.joined == {"AAPL"}


async def test_leave_of_a_symbol_never_joined_does_nothing() -> None:
    membership, transport = make(set())
    membership.leave_soon("AAPL")
    await settle()
    assert transport.leaves == []


async def test_a_failed_leave_is_logged_and_forgotten(caplog: pytest.LogCaptureFixture) -> None:
    routed = {"AAPL"}
    membership, transport = make(routed)
    await membership.join(["AAPL"])

    async def broken(symbol: str) -> None:
        raise ConnectionError("gone")

    transport.leave = broken  # type: ignore[method-assign]
    routed.clear()
    membership.leave_soon("AAPL")
    await settle()
    assert membership.joined == set()
    assert "leaving AAPL failed" in caplog.text
    await membership.join(["AAPL"])  # not routed: nothing to do
    routed.add("AAPL")
    await membership.join(["AAPL"])
    assert transport.joins == ["AAPL", "AAPL"], "joined again when wanted again"


async def test_stop_cancels_pending_leaves() -> None:
    routed = {"AAPL"}
    membership, transport = make(routed)
    await membership.join(["AAPL"])
    routed.clear()
    membership.leave_soon("AAPL")
    membership.stop()
    await settle()
    assert transport.leaves == [] and membership._leaving == set()
