"""Running a transaction again when the database rolled it back to break a lock conflict.

A deadlock victim (InnoDB, PostgreSQL), a serialization failure or a Galera
certification conflict leaves nothing written: the whole transaction is
simply tried again.  Any other error, and the last try's conflict, propagate.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import TypeVar

import sqlalchemy as sa

from infsched.dialects import classify

V = TypeVar("V")

#: Times a transaction is tried before its conflict propagates.
CONFLICT_RETRIES = 5
#: The longest pause before the second try, in seconds; it doubles for each try after.
#: Random below it: writers that collided at once must not collide again at once (Galera
#: certification conflicts come in such pairs).
CONFLICT_JITTER = 0.01


def conflict_pause(tried: int) -> float:
    """Seconds to wait after the `tried`th try of a transaction ended in a conflict."""
    return random.uniform(0, CONFLICT_JITTER * 2 ** (tried - 1))


def is_conflict(exc: BaseException) -> bool:
    """Whether `exc` is a lock conflict the database asks to retry, not an outage."""
    kind = classify(exc)
    return kind is not None and kind.is_conflict


def retrying_conflicts(
    transaction: Callable[[], V],
    *,
    tries: int = CONFLICT_RETRIES,
    on_conflict: Callable[[sa.exc.DBAPIError], None] | None = None,
) -> V:
    """`transaction()`, run again (up to `tries` times in all) while the database rolls it back.

    `transaction` must open and commit its own transaction, so a retry starts afresh.
    `on_conflict` hears each conflict that is retried.
    """
    for number in range(1, tries + 1):
        try:
            return transaction()
        except sa.exc.DBAPIError as exc:
            if number == tries or not is_conflict(exc):
                raise
            if on_conflict is not None:
                on_conflict(exc)
            time.sleep(conflict_pause(number))
    raise AssertionError("tries must be at least 1")
