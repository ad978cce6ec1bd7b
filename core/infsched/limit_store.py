"""`LimitStore`: the flow limits kept in ``infsched_limits``, for every node.

Each row is one target's limit and its state (the rate's arrival time, a
throttled gateway's hold, jobs started). Limits come from three places:

- declared: ``[[limits]]`` in the configuration (source ``config``) and
  executors' `ExecutorSpec.limit` (source ``executor NAME``), put by every node
  when it starts;
- ``infsched limits set`` (source ``operator``): it overrides a declared limit,
  and declarations leave it alone until ``infsched limits remove`` drops it;
- a throttled gateway (source ``throttle``): a row with no limit, holding its
  target until a time.

Nodes read which targets have rows once a second (`targets`), as they read
pauses, so a change reaches every node within a second or two.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Literal, TypeVar

import attrs
import sqlalchemy as sa

from infsched.clock import from_utc_naive, utc_naive
from infsched.database import Database
from infsched.dialects import DatabaseErrorKind
from infsched.flow_limits import FlowLimit, Limit, LimitTarget
from infsched.rate_buckets import from_micros, micros
from infsched.schema import limits as table

OPERATOR = "operator"
THROTTLE = "throttle"
Put = Literal["added", "replaced", "unchanged", "overridden"]


@attrs.frozen
class StoredLimit:
    """A target's limit as the database keeps it, with its state."""

    target: LimitTarget
    limit: FlowLimit
    source: str
    #: When the next start is due at the rate (None: never started).
    next_start: datetime | None
    #: A throttled gateway holds the target until then (None: not held).
    held_until: datetime | None
    #: Jobs claimed under the target since its row was made.
    started: int
    updated_at: datetime

    def as_json(self) -> dict[str, Any]:
        def when(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "target": self.target.id,
            "rate": self.limit.rate,
            "burst": self.limit.burst,
            "max_concurrent": self.limit.max_concurrent,
            "source": self.source,
            "next_start": when(self.next_start),
            "held_until": when(self.held_until),
            "started": self.started,
            "updated_at": when(self.updated_at),
        }


def _values(limit: FlowLimit) -> dict[str, Any]:
    return {"rate": limit.rate, "burst": limit.burst, "max_concurrent": limit.max_concurrent}


V = TypeVar("V")


class LimitStore:
    """Puts, reads and removes limits; `targets` is cached for `ttl` seconds."""

    def __init__(self, database: Database, ttl: float = 1.0) -> None:
        self._engine = database.engine
        self._dialect = database.dialect
        self._clock = database.clock
        self._ttl = ttl
        self._lock = threading.Lock()
        self._targets: frozenset[str] = frozenset()
        self._read_at = float("-inf")

    # -- declaring and setting --

    def declare(self, declared: Sequence[Limit], source: str) -> dict[str, Put]:
        """Put declared limits (config, an executor's spec); operator rows stay as they are."""
        return {d.target.id: self._put(d, source) for d in declared}

    def set(self, limit: Limit) -> Put:
        """An operator's limit: it holds until removed, whatever is declared."""
        return self._put(limit, OPERATOR)

    def _put(self, limit: Limit, source: str) -> Put:
        return self._once_more_if_inserted_meanwhile(lambda: self._put_once(limit, source))

    def _once_more_if_inserted_meanwhile(self, write: Callable[[], V]) -> V:
        """`write()`, and once more if its INSERT met a row another node inserted meanwhile.

        A missing row locks nothing (FOR UPDATE finds no row, READ COMMITTED takes no gap
        lock): nodes starting together with the same declared limits each try to insert it.
        The second try finds the row.
        """
        try:
            return write()
        except sa.exc.IntegrityError as exc:
            if self._dialect.classify(exc) is not DatabaseErrorKind.DUPLICATE_KEY:
                raise
        return write()

    def _put_once(self, limit: Limit, source: str) -> Put:
        target = limit.target.id
        now = utc_naive(self._clock.now())
        values = _values(limit.limit)
        with self._engine.begin() as conn:
            row = conn.execute(
                sa.select(table).where(table.c.target == target).with_for_update()
            ).first()
            if row is None:
                conn.execute(
                    table.insert().values(target=target, source=source, updated_at=now, **values)
                )
                self._read_at = float("-inf")
                return "added"
            if row.source == OPERATOR and source != OPERATOR:
                return "overridden"
            if {k: getattr(row, k) for k in values} == values and row.source == source:
                return "unchanged"
            conn.execute(
                table.update()
                .where(table.c.target == target)
                .values(source=source, updated_at=now, **values)
            )
        return "replaced"

    def replace(self, limit: Limit, source: str) -> bool:
        """Put `limit` in place of the target's, an operator's too, its state (the rate's
        arrival time, a hold, jobs started) kept; False if the target has no row."""
        now = utc_naive(self._clock.now())
        with self._engine.begin() as conn:
            changed = conn.execute(
                table.update()
                .where(table.c.target == limit.target.id)
                .values(source=source, updated_at=now, **_values(limit.limit))
            ).rowcount
        return bool(changed)

    def remove(self, target: LimitTarget) -> bool:
        """Drop a target's limit and state; a declared one comes back when a node starts."""
        with self._engine.begin() as conn:
            removed = conn.execute(table.delete().where(table.c.target == target.id)).rowcount
        self._read_at = float("-inf")
        return bool(removed)

    def hold(self, targets: Sequence[str], until: datetime) -> None:
        """Start nothing under `targets` before `until` (a gateway said it was throttled).

        A target without a row gets one with no limit (source ``throttle``), so
        the hold reaches every node; a later hold never shortens an earlier one.
        """
        self._once_more_if_inserted_meanwhile(lambda: self._hold_once(targets, until))
        self._read_at = float("-inf")

    def _hold_once(self, targets: Sequence[str], until: datetime) -> None:
        now = utc_naive(self._clock.now())
        until_us = micros(until)
        with self._engine.begin() as conn:
            for target in sorted(set(targets)):
                updated = conn.execute(
                    table.update()
                    .where(table.c.target == target, table.c.held_until < until_us)
                    .values(held_until=until_us, updated_at=now)
                ).rowcount
                if updated:
                    continue
                exists = conn.execute(
                    sa.select(table.c.target).where(table.c.target == target)
                ).first()
                if exists is None:
                    conn.execute(
                        table.insert().values(
                            target=target,
                            source=THROTTLE,
                            held_until=until_us,
                            updated_at=now,
                            **_values(FlowLimit()),
                        )
                    )

    def drop_spent_holds(self, ended_before: datetime) -> int:
        """Drop the rows a throttled gateway left (source ``throttle``, no limit) whose hold
        ended before `ended_before`; returns how many.  Until then a target's claims go
        through its row; a gateway throttling again gets a new one (`hold`)."""
        with self._engine.begin() as conn:
            dropped = conn.execute(
                table.delete().where(
                    table.c.source == THROTTLE, table.c.held_until < micros(ended_before)
                )
            ).rowcount
        if dropped:
            self._read_at = float("-inf")
        return int(dropped)

    # -- reading --

    def targets(self, *, fresh: bool = False) -> frozenset[str]:
        """The ids of the targets that have a row (a limit or a hold); cached."""
        with self._lock:
            if fresh or time.monotonic() - self._read_at > self._ttl:
                with self._engine.connect() as conn:
                    self._targets = frozenset(conn.execute(sa.select(table.c.target)).scalars())
                self._read_at = time.monotonic()
            return self._targets

    def all(self, conn: sa.Connection | None = None) -> list[StoredLimit]:
        """Every target's limit and state, by target; on `conn` if given (one query)."""
        query = sa.select(table).order_by(table.c.target)
        if conn is not None:
            return [_stored(row) for row in conn.execute(query).all()]
        with self._engine.connect() as own:
            return [_stored(row) for row in own.execute(query).all()]

    def get(self, target: LimitTarget) -> StoredLimit | None:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(table).where(table.c.target == target.id)).first()
        return None if row is None else _stored(row)


def _stored(row: Any) -> StoredLimit:
    return StoredLimit(
        target=LimitTarget.parse(row.target),
        limit=FlowLimit(rate=row.rate, burst=row.burst, max_concurrent=row.max_concurrent),
        source=row.source,
        next_start=from_micros(row.tat),
        held_until=from_micros(row.held_until),
        started=int(row.started),
        updated_at=from_utc_naive(row.updated_at),
    )
