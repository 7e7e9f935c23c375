"""The terminal client's rows: last, bid, ask, change from the reference, updates/s, gaps."""

from __future__ import annotations

from marketstream.client.accounting import SymbolStats
from marketstream.client.board import Board
from marketstream.client.events import Disconnected, Tick, Unsubscribed


def test_rows_show_prices_change_rate_and_gaps() -> None:
    now = [100.0]
    board = Board(["AAPL", "MSFT"], references={"MSFT": 400.0}, clock=lambda: now[0])
    board.apply(Tick("AAPL", 1, 0, 200.0, 1, 199.9, 200.1))
    board.apply(Tick("AAPL", 2, 0, 202.0, 1, 201.9, 202.1))
    board.apply(Tick("MSFT", 7, 0, 404.0, 1, 403.9, 404.1))
    stats = {"AAPL": SymbolStats(lost=2, missed=1, conflated=5)}
    rows = {r[0]: r for r in board.lines(stats)}
    assert rows["AAPL"] == ("AAPL", "202", "201.9", "202.1", "+2", "+1.00%", "0.4", "3", "5")
    assert rows["MSFT"][4:6] == ("+4", "+1.00%"), "measured from the catalog's reference"
    now[0] += 6
    assert board.lines(stats)[0][6] == "0.0", "updates/s over the last 5 s"
    board.apply(Disconnected(1012, "restart", 0.05))
    assert "1012" in board.status
    board.apply(Unsubscribed(("MSFT",), "forbidden"))
    assert [r[0] for r in board.lines({})] == ["AAPL"]
