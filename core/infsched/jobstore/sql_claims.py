"""LaneClaims: the SQL store's claim, one priority and lane at a time, under the flow limits.

A claim reads the claim index ``(state, priority, repository, executor,
flow_key, run_at)`` one *lane* (repository, executor, flow key) at a time, so
each read is an index range in due order, whatever the other lanes hold:

- **Fair shares.** Within a priority, the lanes with waiting jobs share the
  claim: each gets ``ceil(left / lanes)``, and what a lane leaves goes round
  again to those that filled theirs.  The lane that goes first turns with every
  claim, so a burst on one key delays another by at most one claim.
- **Limits.** A lane whose targets have limits (`FlowRules.limited`) takes no
  more than they allow.  The claim locks those targets' rows in the limits table
  (in name order, so two claims never deadlock on them), counts the jobs in
  flight under each concurrency cap, turns each rate into start slots
  (`RateBucket`) and writes the rate's new state back, all in its transaction:
  one round trip per target per claim, never per job.

The lanes and priorities with waiting jobs are read at most once a second (a
single index descent each); a new lane is claimed within a second.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from operator import itemgetter
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import as_utc, utc_naive
from infsched.dialects import Dialect
from infsched.fair_shares import share_out
from infsched.flow_limits import Lane, LimitScope
from infsched.id_lists import id_in
from infsched.jobstore.base import ClaimedJob, FlowRules, JobState
from infsched.jobstore.tables import SCOPE_COLUMNS, jobs
from infsched.limit_rows import buckets_of, lock_rows, write_buckets
from infsched.rate_buckets import RateBucket, from_micros

_WAITING = JobState.WAITING.value
_CLAIMED = JobState.CLAIMED.value
#: What a claim reads of each job, in this order.
CLAIMED_COLUMNS = (
    jobs.c.id,
    jobs.c.job_key,
    jobs.c.entity_id,
    jobs.c.due_at,
    jobs.c.run_at,
    jobs.c.attempt,
    jobs.c.payload,
)
_DUE_AT, _RUN_AT = 3, 4
#: Seconds the lanes with waiting jobs are reused between claims.
LANES_TTL = 1.0
#: Distinct priorities read one by one before a single SELECT DISTINCT is cheaper.
MAX_PRIORITY_PROBES = 16
#: Lanes of one priority read per look, at most; more are read on the next looks, in turn.
MAX_LANE_PROBES = 64


def utc_text(text: str) -> datetime:
    """A DATETIME column read as text (naive UTC) as an aware datetime."""
    return datetime.fromisoformat(text + "+00:00")


@attrs.define
class _Taken:
    """What one lane gave a claim: its rows (CLAIMED_COLUMNS, snapshot decoded)."""

    priority: int
    lane: Lane
    rows: list[Any]


class LaneClaims:
    """Claims for one store: the lanes it has seen, whose turn it is, and the claim itself."""

    def __init__(self, dialect: Dialect, db_now: Callable[[sa.Connection], datetime]) -> None:
        self._dialect = dialect
        self._db_now = db_now
        self._lanes: list[tuple[int, list[Lane]]] = []
        self._lanes_read_at = float("-inf")
        #: Per priority, the last lane read when a look stopped at MAX_LANE_PROBES.
        self._lane_cursor: dict[int, Lane] = {}
        self._turn = 0

    def forget_lanes(self) -> None:
        """Read the lanes again at the next claim (nothing was due)."""
        self._lanes_read_at = float("-inf")

    # -- the claim --

    def claim(
        self,
        engine: sa.Engine,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
        flow: FlowRules | None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` jobs: the lanes under limits in one transaction (holding
        their targets' rows), then the others in a second.

        Two transactions, so that a claim of lanes nobody limits never waits for a
        limited target's row: every node's claims of that target take turns on
        it, and the lanes beside it would take turns with them.
        """
        serving = set(repositories)
        limited = flow.limited if flow is not None else frozenset()
        self._turn += 1
        with engine.begin() as conn:
            lanes = [
                (priority, [lane for lane in found if lane.repository in serving])
                for priority, found in self._waiting_lanes(conn)
            ]
            under = {
                lane for _, found in lanes for lane in found if limited.intersection(lane.targets())
            }
            if not under:
                return self._claim_lanes(conn, owner, limit, lease_seconds, lanes, None)
            assert flow is not None
            capped = [(p, [lane for lane in found if lane in under]) for p, found in lanes]
            # The limited lanes' fair share of the claim, by their number; the rest
            # comes back to them below if the other lanes leave it.  Counted per
            # priority, as `count` is: a lane with jobs of three priorities counted
            # once against three split a claim of limited lanes only into two
            # transactions, each locking, reading and writing the targets' rows.
            count = sum(len(found) for _, found in lanes)
            share = math.ceil(limit * sum(len(found) for _, found in capped) / count)
            claimed = self._claim_lanes(conn, owner, share, lease_seconds, capped, flow)
        filled = len(claimed) >= share
        rest = [(p, [lane for lane in found if lane not in under]) for p, found in lanes]
        if len(claimed) < limit and any(found for _, found in rest):
            with engine.begin() as conn:
                claimed += self._claim_lanes(
                    conn, owner, limit - len(claimed), lease_seconds, rest, None
                )
        if filled and len(claimed) < limit:
            with engine.begin() as conn:
                claimed += self._claim_lanes(
                    conn, owner, limit - len(claimed), lease_seconds, capped, flow
                )
        return claimed

    def _claim_lanes(
        self,
        conn: sa.Connection,
        owner: str,
        limit: int,
        lease_seconds: float,
        lanes: Sequence[tuple[int, list[Lane]]],
        flow: FlowRules | None,
    ) -> list[ClaimedJob]:
        """Claim from `lanes`, under `flow`'s limits for those it names (None: no limits)."""
        limited = flow.limited if flow is not None else frozenset()
        in_use = {t for _, found in lanes for lane in found for t in lane.targets()} & limited
        buckets: dict[str, RateBucket] = {}
        one = _OneClaim(self._dialect, self._db_now, owner, lease_seconds)
        if in_use:
            assert flow is not None
            # The claim's clock is read in the lock's statement, before any wait for
            # the rows: as early as a read of its own just before the lock would be.
            rows, read_at = lock_rows(conn, sorted(in_use), self._dialect.current_timestamp())
            one.claimed_at = read_at if read_at is not None else self._db_now(conn)
            buckets = buckets_of(conn, rows, one.claimed_at, flow.horizon, _count_in_flight)
        taken = [
            _Taken(priority, lane, rows)
            for priority, lane, rows in share_out(
                lanes,
                limit,
                self._turn,
                buckets,
                lambda priority, lane, n: one.take(conn, priority, lane, n),
            )
        ]
        if not taken:
            return []
        slots = _slots(taken, buckets)
        if buckets:
            write_buckets(conn, buckets)
        now = one.claimed_at
        assert now is not None, "a claim that took rows read the clock"
        return [
            ClaimedJob(
                id=job_id,
                job_key=key,
                repository=t.lane.repository,
                executor=t.lane.executor,
                entity_id=entity_id,
                due_at=utc_text(due_at),
                run_at=utc_text(run_at),
                priority=t.priority,
                attempt=attempt + one.bump,
                snapshot=snapshot,
                claimed_at=now,
                flow_key=t.lane.flow_key,
                start_at=slot,
            )
            for t, lane_slots in zip(taken, slots, strict=True)
            for (job_id, key, entity_id, due_at, run_at, attempt, snapshot), slot in zip(
                t.rows, lane_slots, strict=True
            )
        ]

    # -- which lanes have waiting jobs --

    def _waiting_lanes(self, conn: sa.Connection) -> list[tuple[int, list[Lane]]]:
        """Each priority with waiting jobs (highest first) and its lanes; re-read at most
        once a second.

        A new higher priority or a new lane is claimed within a second; until then
        it waits behind those already known, and no job is ever skipped.
        """
        if time.monotonic() - self._lanes_read_at > LANES_TTL:
            self._lanes = [(p, self._read_lanes(conn, p)) for p in _read_priorities(conn)]
            self._lanes_read_at = time.monotonic()
        return self._lanes

    def _read_lanes(self, conn: sa.Connection, priority: int) -> list[Lane]:
        """The lanes of `priority` with waiting jobs, a single index descent each.

        At most MAX_LANE_PROBES per look: past that, the next look goes on after
        the last one read, and wraps round, so every lane is claimed in turn.
        """
        found: list[Lane] = []
        after = self._lane_cursor.pop(priority, None)
        wrapped = after is None
        while len(found) < MAX_LANE_PROBES:
            query = (
                sa.select(jobs.c.repository, jobs.c.executor, jobs.c.flow_key)
                .where(jobs.c.state == _WAITING, jobs.c.priority == priority)
                .order_by(jobs.c.repository, jobs.c.executor, jobs.c.flow_key)
                .limit(1)
            )
            if after is not None:
                query = query.where(_after(after))
            row = conn.execute(query).first()
            if row is None:
                if wrapped:
                    return found
                wrapped, after = True, None
                continue
            lane = Lane(row[0], row[1], row[2])
            if lane in found:
                return found  # wrapped round to the first lane of this look
            found.append(lane)
            after = lane
        self._lane_cursor[priority] = after if after is not None else found[-1]
        return found


def _after(lane: Lane) -> sa.ColumnElement[bool]:
    """Rows of lanes after `lane` in the claim index's order."""
    r, e, k = jobs.c.repository, jobs.c.executor, jobs.c.flow_key
    return sa.or_(
        r > lane.repository,
        sa.and_(r == lane.repository, e > lane.executor),
        sa.and_(r == lane.repository, e == lane.executor, k > lane.flow_key),
    )


def _read_priorities(conn: sa.Connection) -> tuple[int, ...]:
    """The distinct priorities of waiting jobs, highest first.

    One MAX() per value, each a single descent of the claim index: a
    SELECT DISTINCT read every waiting row's entry (18 ms a call with
    50,000 waiting jobs).  Past MAX_PRIORITY_PROBES values, DISTINCT it is.
    """
    found: list[int] = []
    while len(found) < MAX_PRIORITY_PROBES:
        query = sa.select(sa.func.max(jobs.c.priority)).where(jobs.c.state == _WAITING)
        if found:
            query = query.where(jobs.c.priority < found[-1])
        value = conn.execute(query).scalar()
        if value is None:
            return tuple(found)
        found.append(int(value))
    every = conn.execute(
        sa.select(jobs.c.priority).where(jobs.c.state == _WAITING).distinct()
    ).scalars()
    return tuple(sorted(every, reverse=True))


def _count_in_flight(conn: sa.Connection, scope: str, name: str) -> int:
    """The jobs claimed under a target: in flight, across the cluster."""
    count = conn.execute(
        sa.select(sa.func.count()).where(
            jobs.c.state == _CLAIMED, SCOPE_COLUMNS[LimitScope(scope)] == name
        )
    ).scalar_one()
    return int(count)


def _slots(taken: Sequence[_Taken], buckets: dict[str, RateBucket]) -> list[list[datetime | None]]:
    """Each taken job's start slot, by the database's clock (None: at once); every
    target's count of jobs started goes up by its lanes' jobs.

    A job under several rates starts at the latest of its slots.
    """
    found: list[list[datetime | None]] = []
    for t in taken:
        targets = [buckets[name] for name in t.lane.targets() if name in buckets]
        rated = [b for b in targets if b.limit.rate is not None]
        for b in targets:
            if b.limit.rate is None:
                b.taken += len(t.rows)
        if len(rated) == 1:
            # The common case, one job at a time: a slot at the claim's time is None,
            # so a rate that never binds costs a job no datetime and no look at its slot.
            bucket = rated[0]
            found.append([_slot_time(bucket.slot()) for _row in t.rows])
        elif rated:
            found.append([_latest(b.slot() for b in rated) for _row in t.rows])
        else:
            found.append([None] * len(t.rows))
    return found


def _slot_time(micros: int | None) -> datetime | None:
    return None if micros is None else from_micros(micros)


def _latest(slots: Iterable[int | None]) -> datetime | None:
    """The latest of a job's slots under several rates (None: all at once)."""
    found = [s for s in slots if s is not None]
    return _slot_time(max(found)) if found else None


# -- reading one lane --


def _due(priority: int, lane: Lane, limit: int, now: sa.ColumnElement[Any]) -> sa.Select[Any]:
    """The lane's waiting jobs of `priority` due by `now`, oldest first (no columns yet)."""
    return (
        sa.select()
        .where(
            jobs.c.state == _WAITING,
            jobs.c.priority == priority,
            jobs.c.repository == lane.repository,
            jobs.c.executor == lane.executor,
            jobs.c.flow_key == lane.flow_key,
            jobs.c.run_at <= now,
        )
        .order_by(jobs.c.run_at)
        .limit(limit)
    )


class _OneClaim:
    """One claim's reads of lanes: an UPDATE returning the rows where the dialect can,
    else a locking SELECT and an UPDATE of the ids it locked."""

    def __init__(
        self,
        dialect: Dialect,
        db_now: Callable[[sa.Connection], datetime],
        owner: str,
        lease_seconds: float,
    ) -> None:
        self._dialect = dialect
        self._db_now = db_now
        self._owner = owner
        self._lease = timedelta(seconds=lease_seconds)
        self._clock = dialect.current_timestamp()
        self._returning = (
            self._clock is not None
            and dialect.returning_rows(jobs.update().returning(jobs.c.id), "probe") is not None
        )
        #: The database's clock for the claim: judged misfires, slots and leases start there.
        self.claimed_at: datetime | None = None
        #: What to add to a row's attempt to count this claim.
        self.bump = 0 if self._returning else 1

    def take(self, conn: sa.Connection, priority: int, lane: Lane, n: int) -> list[Any]:
        if self._returning:
            return self._take_returning(conn, priority, lane, n)
        return self._take_then_update(conn, priority, lane, n)

    def _take_returning(self, conn: sa.Connection, priority: int, lane: Lane, n: int) -> list[Any]:
        """One statement: an UPDATE of the rows a locking SELECT skipping locked ones
        finds, returning them as one JSON document with the clock.

        On PostgreSQL it saved the claim's second pass over the rows (the UPDATE
        by an id list) and its round trips.
        """
        dialect, clock = self._dialect, self._clock
        assert clock is not None
        locked = dialect.lock_skipping_locked(
            _due(priority, lane, n, clock).add_columns(jobs.c.id)
        ).subquery("due")
        update = (
            jobs.update()
            .where(jobs.c.id == locked.c.id)
            .values(
                state=_CLAIMED,
                owner=self._owner,
                lease_until=clock + sa.literal(self._lease),
                attempt=jobs.c.attempt + 1,
            )
            .returning(*CLAIMED_COLUMNS)
        )
        claimed = dialect.returning_rows(update, "claimed")
        assert claimed is not None
        values = [claimed.c[c.name] for c in CLAIMED_COLUMNS[:-1]]
        document = sa.select(
            sa.func.count(),
            dialect.json_array_agg(
                dialect.json_array(*values, dialect.json_document(claimed.c.payload))
            ),
            clock,
        ).select_from(claimed)
        count, text, read_at = conn.execute(document).one()
        if self.claimed_at is None:
            self.claimed_at = as_utc(read_at)
        if not count:
            return []
        rows: list[Any] = json.loads(text)
        rows.sort(key=itemgetter(_RUN_AT))
        return rows

    def _take_then_update(
        self, conn: sa.Connection, priority: int, lane: Lane, n: int
    ) -> list[Any]:
        """A locking SELECT of the lane's due rows, then one UPDATE of the ids it locked."""
        if self.claimed_at is None:
            # The database's clock, read once per claim: selected with every row it
            # cost a DATETIME parse per job, far more than this round trip.
            self.claimed_at = self._db_now(conn)
        naive_now = utc_naive(self.claimed_at)
        query = _due(priority, lane, n, sa.literal(naive_now, jobs.c.run_at.type)).add_columns(
            *CLAIMED_COLUMNS
        )
        rows = self._lock_rows(conn, self._dialect.lock_skipping_locked(query))
        if rows:
            conn.execute(
                jobs.update()
                .where(id_in(jobs.c.id, [r[0] for r in rows]))
                .values(
                    state=_CLAIMED,
                    owner=self._owner,
                    lease_until=naive_now + self._lease,
                    attempt=jobs.c.attempt + 1,
                )
            )
        return rows

    def _lock_rows(self, conn: sa.Connection, query: sa.Select[Any]) -> list[Any]:
        """The rows `query` locks, each a list of CLAIMED_COLUMNS with the snapshot decoded.

        They come back as one JSON document (the locking SELECT runs inside an
        aggregate): PyMySQL parsed a thousand 9-column rows in pure Python, a
        fifth of a node's CPU in the execute benchmark, where one json.loads of
        the batch, snapshots included, is C.  Times are text in the document
        ("YYYY-MM-DD HH:MM:SS.ffffff", naive UTC), which utc_text reads.  A
        document the database cut short (at its aggregate length limit,
        `Dialect.aggregate_length_setting`) is read again row by row: the rows
        are this transaction's by now.
        """
        locked = query.subquery()
        dialect = self._dialect
        values = [locked.c[c.name] for c in CLAIMED_COLUMNS[:-1]]
        document = sa.select(
            sa.func.count(),
            dialect.json_array_agg(
                dialect.json_array(*values, dialect.json_document(locked.c.payload))
            ),
        )
        count, text = conn.execute(document).one()
        if not count:
            return []
        try:
            rows: list[Any] = json.loads(text)
        except ValueError:
            rows = []
        if len(rows) != count:
            rows = [
                [*row[:_DUE_AT], str(row[_DUE_AT]), str(row[_RUN_AT]), row[-2], json.loads(row[-1])]
                for row in conn.execute(query)
            ]
        # The aggregate's order is the database's to choose: oldest run time first again.
        rows.sort(key=itemgetter(_RUN_AT))
        return rows
