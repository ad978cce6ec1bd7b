"""The limits table's rows as a claim draws on them: locked, turned into buckets, written back.

Shared by the job stores: the SQL store locks the rows inside its claim's
transaction (in target order, so two claims never deadlock on them); another
store does so in a transaction of its own around its claim.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import sqlalchemy as sa

from infsched.clock import as_utc
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
    rows, _read_at = lock_rows(conn, targets)
    return buckets_of(conn, rows, now, horizon, in_flight)


def lock_rows(
    conn: sa.Connection,
    targets: Sequence[str],
    clock: sa.ColumnElement[datetime] | None = None,
) -> tuple[Sequence[sa.Row[Any]], datetime | None]:
    """The targets' rows, locked in target order, and `clock` read with them (None: no
    clock given, or no row).

    The claim's clock read in the lock's own statement saves a claim under limits
    one of its round trips, each of which waits for the interpreter's lock behind
    the node's busy threads as well as for the database.
    """
    columns: list[Any] = [limits]
    if clock is not None:
        columns.append(clock.label("read_at"))
    rows = conn.execute(
        sa.select(*columns)
        .where(limits.c.target.in_(sorted(targets)))
        .order_by(limits.c.target)
        .with_for_update()
    ).all()
    read_at = as_utc(rows[0].read_at) if rows and clock is not None else None
    return rows, read_at


def buckets_of(
    conn: sa.Connection,
    rows: Sequence[sa.Row[Any]],
    now: datetime,
    horizon: float,
    in_flight: InFlight,
) -> dict[str, RateBucket]:
    """Locked limit rows as buckets for one claim at `now` (the concurrency caps counted)."""
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
