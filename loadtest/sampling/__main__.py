"""`python -m loadtest.sampling FILE [N]`: the busy share of the hub's samples by function,
self (the innermost frame) and inclusive. Samples whose innermost frame is the event
loop's own `run` (waiting in epoll) count as idle."""

from __future__ import annotations

import collections
import sys

IDLE = ("runners.py:run_until_complete", "runners.py:run")


def main(argv: list[str]) -> None:
    rows = [line.rsplit(" ", 1) for line in open(argv[0])]
    top = int(argv[1]) if len(argv) > 1 else 30
    total = sum(int(n) for _, n in rows)
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    busy = 0
    for stack, count in rows:
        n, frames = int(count), stack.split(";")
        if frames[-1].endswith(IDLE):
            continue
        busy += n
        own[frames[-1]] += n
        for name in set(frames):
            inclusive[name] += n
    print(f"samples {total}, busy {busy} ({100 * busy / max(total, 1):.0f}%); shares of busy:")
    print("--- self")
    for name, n in own.most_common(top):
        print(f"{100 * n / busy:5.1f}% {name}")
    print("--- inclusive")
    for name, n in inclusive.most_common(top + 8):
        print(f"{100 * n / busy:5.1f}% {name}")


if __name__ == "__main__":
    main(sys.argv[1:])
