"""Pacer: holds rate-limited jobs until their start slots, off the pool.

A claim under a rate gives each job a slot up to a second ahead
(`ClaimedJob.start_at`).  A pool thread sleeping until a slot would keep
jobs of other lanes waiting behind it, so the pacer's one thread keeps the
early jobs in a heap and hands each to the runner when its slot comes,
together with the others whose slot has come by then.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections.abc import Callable, Sequence

from infsched.engine.held import Claim
from infsched.jobstore.base import ClaimedJob

#: Seconds early a slot may be handed on: the handing on itself takes about this long.
EARLY = 0.001

Dispatch = Callable[[list[ClaimedJob], Claim], None]


class Pacer:
    """Rate-limited jobs waiting for their slots, by monotonic time."""

    def __init__(self, dispatch: Dispatch) -> None:
        self._dispatch = dispatch
        self._heap: list[tuple[float, int, ClaimedJob, Claim]] = []
        self._order = itertools.count()
        self._changed = threading.Condition()
        self._stopped = False
        self._thread: threading.Thread | None = None

    def hold(self, jobs: Sequence[tuple[float, ClaimedJob]], claim: Claim) -> None:
        """Hand each job on at its monotonic time."""
        with self._changed:
            for at, job in jobs:
                heapq.heappush(self._heap, (at, next(self._order), job, claim))
            if self._thread is None and not self._stopped:
                self._thread = threading.Thread(
                    target=self._loop, name="infsched-pacer", daemon=True
                )
                self._thread.start()
            self._changed.notify()

    def take_all(self) -> list[ClaimedJob]:
        """Stop, and the jobs still waiting for their slots (never started)."""
        with self._changed:
            self._stopped = True
            waiting = [job for _at, _n, job, _claim in self._heap]
            self._heap.clear()
            self._changed.notify()
        if self._thread is not None:
            self._thread.join(timeout=5)
        return waiting

    def _loop(self) -> None:
        while True:
            with self._changed:
                while not self._stopped and (
                    not self._heap or self._heap[0][0] - EARLY > time.monotonic()
                ):
                    wait = self._heap[0][0] - EARLY - time.monotonic() if self._heap else None
                    self._changed.wait(wait)
                if self._stopped:
                    return
                now = time.monotonic() + EARLY
                due: dict[int, tuple[Claim, list[ClaimedJob]]] = {}
                while self._heap and self._heap[0][0] <= now:
                    _at, _n, job, claim = heapq.heappop(self._heap)
                    due.setdefault(id(claim), (claim, []))[1].append(job)
            for claim, jobs in due.values():
                self._dispatch(jobs, claim)
