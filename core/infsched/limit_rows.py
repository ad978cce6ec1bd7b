"""The limits table's rows as a claim draws on them: locked, turned into buckets, written back.

Shared by the job stores: the SQL store locks the rows inside its claim's
transaction (in target order, so two claims never deadlock on them); another
store does so in a transaction of its own around its claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime

import sqlalchemy as sa

from infsched.flow_limits import FlowLimit
from infsched.rate_buckets import RateBucket, micros
from infsched.schema import limits

#: (conn, scope, name) -> the jobs in flight under the target ``scope:name``.
InFlight = Callable[[sa.Connection, str, str], int]


def lock_buckets(
    conn: sa.Connection,
    targets: Sequence[str],
    now: datetime,
    horizon: float,
    in_flight: InFlight,
) -> dict[str, RateBucket]:
    """The targets' rows, locked in target order, as buckets for one claim at `now`."""
    rows = conn.execute(
        sa.select(limits)
        .where(limits.c.target.in_(sorted(targets)))
        .order_by(limits.c.target)
        .with_for_update()
    ).all()
    now_us = micros(now)
    buckets: dict[str, RateBucket] = {}
    for row in rows:
        limit = FlowLimit(rate=row.rate, burst=row.burst, max_concurrent=row.max_concurrent)
        flying = 0
        if limit.max_concurrent is not None:
            scope, _, name = str(row.target).partition(":")
            flying = in_flight(conn, scope, name)
        buckets[row.target] = RateBucket(
            limit,
            tat=row.tat,
            held_until=row.held_until,
            in_flight=flying,
            now=now_us,
            horizon=horizon,
        )
    return buckets


def write_buckets(conn: sa.Connection, buckets: dict[str, RateBucket]) -> None:
    """Each drawn-on bucket's new arrival time, and the jobs it started."""
    changed = [
        {"b_target": target, "b_tat": math.ceil(b.tat), "b_started": b.taken}
        for target, b in buckets.items()
        if b.taken
    ]
    if changed:
        conn.execute(
            limits.update()
            .where(limits.c.target == sa.bindparam("b_target"))
            .values(
                tat=sa.bindparam("b_tat"), started=limits.c.started + sa.bindparam("b_started")
            ),
            changed,
        )
