"""`python -m loadtest.receive` and `python -m loadtest.sendfloor`, run as a user runs them,
sized down to a few seconds: they finish, count every message and byte, and report their
fields. Benchmarks, not timed tests: what they measure is only checked to be there."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

from loadtest.services import ROOT

RECEIVE_FIELDS = ("cpu_us_per_message", "messages", "published", "batch", "seconds", "drained")
SENDFLOOR_FIELDS = ("cpu_us_per_frame", "user_us_per_frame", "system_us_per_frame", "frames_per_s", "received_ratio")


def run(module: str, *args: str, timeout: float = 60) -> tuple[list[str], dict[str, Any]]:
    """Run `python -m module args`; its stdout's lines and the first one's JSON."""
    argv = [sys.executable, "-m", module, *args]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{module} {' '.join(args)} exited with {done.returncode}:\n{done.stderr[-3000:]}"
    lines = done.stdout.splitlines()
    assert lines, f"{module} printed nothing:\n{done.stderr[-3000:]}"
    return lines, json.loads(lines[0])


def test_receive_gets_every_message_and_the_drain_takes_most_of_each_batch(redis_url: str) -> None:
    lines, result = run("loadtest.receive", "--messages", "2000", "--redis-url", redis_url)
    assert len(lines) == 1, f"one JSON line, not {lines}"
    for field in RECEIVE_FIELDS:
        assert field in result, field
    assert result["published"] == result["messages"] == 2000, result
    assert result["batch"] == 5 and result["drain"] is True, result
    assert result["cpu_us_per_message"] > 0 and result["seconds"] > 0, result
    # a batch of 5 arrives in one read: get_message takes the first, the drain the others
    assert 0 < result["drained"] < 2000, result


def test_receive_without_the_drain_takes_every_message_with_get_message(redis_url: str) -> None:
    _, result = run("loadtest.receive", "--messages", "2000", "--no-drain", "--redis-url", redis_url)
    assert result["published"] == result["messages"] == 2000, result
    assert result["drain"] is False and result["drained"] == 0, result
    assert result["cpu_us_per_message"] > 0, result


def test_receive_compare_runs_both_alternated_and_reports_medians_and_their_ratio(redis_url: str) -> None:
    args = ("--messages", "500", "--compare", "--repeat", "2", "--redis-url", redis_url)
    lines, document = run("loadtest.receive", *args, timeout=90)
    runs = document["runs"]
    assert [r["drain"] for r in runs] == [True, False, False, True], "alternated, the order swapped each repeat"
    assert all(r["messages"] == r["published"] == 500 for r in runs), runs
    assert all((r["drained"] > 0) == r["drain"] for r in runs), runs
    medians = document["medians"]
    assert medians["drain"]["cpu_us_per_message"] > 0 and medians["no_drain"]["cpu_us_per_message"] > 0
    assert document["ratio_no_drain_over_drain"] == round(
        medians["no_drain"]["cpu_us_per_message"] / medians["drain"]["cpu_us_per_message"], 3
    )
    assert "no drain / drain" in lines[1], "a readable line follows the JSON"


def check_sendfloor(result: dict[str, Any], send: bool) -> None:
    for field in SENDFLOOR_FIELDS:
        assert field in result, field
    assert result["args"]["send"] is send
    assert result["cpu_us_per_frame"] > 0 and result["frames_per_s"] > 0, result
    assert result["user_us_per_frame"] >= 0 and result["system_us_per_frame"] >= 0, result
    assert abs(result["cpu_us_per_frame"] - result["user_us_per_frame"] - result["system_us_per_frame"]) <= 0.02
    assert result["received_ratio"] == 1.0, result


def test_sendfloor_with_transport_write() -> None:
    _, result = run("loadtest.sendfloor", "--seconds", "1", "--connections", "20", "--per-round", "10")
    check_sendfloor(result, send=False)


def test_sendfloor_with_socket_send() -> None:
    _, result = run("loadtest.sendfloor", "--seconds", "1", "--connections", "20", "--per-round", "10", "--send")
    check_sendfloor(result, send=True)


def test_sendfloor_counts_every_byte_when_the_sockets_fill_up() -> None:
    """More bytes a round than two sockets hold (2 x 1000 frames of 60 kB): `socket.send`
    would block (the rest goes to the transport), and the transports buffer; no failure,
    and the reader gets every byte written."""
    big = ("--seconds", "0.3", "--connections", "2", "--per-round", "1000", "--rounds", "100", "--size", "60000")
    for send in ((), ("--send",)):
        _, result = run("loadtest.sendfloor", *big, *send)
        check_sendfloor(result, send=bool(send))
