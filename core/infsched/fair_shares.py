"""share_out: how one claim shares its jobs between lanes, within their targets' limits.

The same for every job store (it is part of what `JobStore.claim_due`
promises, and the contract suite checks it): highest priority first; within a
priority, the lanes take turns at what is left of the claim, each getting
``ceil(left / lanes)`` capped by what its limited targets allow; a lane that
filled its share may take more of what the others left, for up to
MAX_ROUNDS rounds.  The lane that goes first is the `turn`-th, so it moves on
with every claim.  Jobs are taken through `take`, the store's own read of one
lane, which may give fewer than asked.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import TypeVar

from infsched.flow_limits import Lane
from infsched.rate_buckets import RateBucket

T = TypeVar("T")
#: Rounds of shares within one priority of one claim, at most.
MAX_ROUNDS = 3


def share_out(
    lanes: Sequence[tuple[int, Sequence[Lane]]],
    limit: int,
    turn: int,
    buckets: Mapping[str, RateBucket],
    take: Callable[[int, Lane, int], list[T]],
) -> list[tuple[int, Lane, list[T]]]:
    """(priority, lane, what it gave) in the order taken; `lanes` highest priority first.

    `take(priority, lane, n)` takes up to n jobs of the lane, oldest first.
    """
    taken: list[tuple[int, Lane, list[T]]] = []
    left = limit
    for priority, found in lanes:
        if left <= 0:
            break
        if not found:
            continue
        start = turn % len(found)
        active = [*found[start:], *found[:start]]
        for _round in range(MAX_ROUNDS):
            if left <= 0 or not active:
                break
            share = math.ceil(left / len(active))
            again: list[Lane] = []
            for lane in active:
                targets = [buckets[t] for t in lane.targets() if t in buckets]
                want = allowed(min(share, left), targets)
                if want <= 0:
                    continue
                rows = take(priority, lane, want)
                for bucket in targets:
                    bucket.reserve(len(rows))
                if rows:
                    taken.append((priority, lane, rows))
                    left -= len(rows)
                if len(rows) == want == share:
                    again.append(lane)
            active = again
    return taken


def allowed(want: int, targets: Sequence[RateBucket]) -> int:
    """`want`, or less where a target's allowance is smaller."""
    for bucket in targets:
        room = bucket.allowance()
        if room is not None:
            want = min(want, room)
    return want
