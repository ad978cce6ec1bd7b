"""Recovering a node's unfinished work in the SQL job store, and noticing late outcomes.

Delivery is at least once.  A job claimed by a node that died waits again
once its lease expires (`recover_expired`, run by every node's lease
keeper); its attempt counter keeps the lost run, so the next run sees the
same job key and the next attempt number.  Recovery skips rows another
transaction holds: a node that stalled in the middle of a transaction (a
frozen VM) keeps its locks until it wakes up or the database drops its
connection, and must not stall the node that recovers its work.

Also this module's:

- a node restarted under the same node id takes back at once what its
  previous process had claimed (nobody else would: the new process renews
  leases under that id);
- a node that could not write an outcome before its lease expired (the
  database was away longer than job_lease) finds, when it writes, that the
  job is no longer its own: another node has claimed or finished it and runs
  it again.  Those outcomes are counted as lost (``jobs_outcome_lost_total``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import sqlalchemy as sa

from infsched.clock import utc_naive
from infsched.conflict_retries import retrying_conflicts
from infsched.database import Database
from infsched.jobstore.base import JobState
from infsched.jobstore.tables import jobs, unowned

#: Jobs returned to waiting per transaction.
RECOVER_BATCH = 1000


def recover_expired(database: Database) -> int:
    """Jobs whose lease expired (by the database's clock) wait again; returns how many.

    Rows locked by another transaction are left for the next round.
    """

    def expired(conn: sa.Connection) -> sa.Select[tuple[int]]:
        now = utc_naive(database.now(conn))
        return sa.select(jobs.c.id).where(
            jobs.c.state == JobState.CLAIMED.value, jobs.c.lease_until < now
        )

    return _requeue(database, expired)


def reclaim_own(database: Database, owner: str) -> int:
    """Jobs claimed under node id `owner` by an earlier process wait again; returns how many.

    Call before this process claims anything: every job claimed under the id
    then belongs to a process that is gone.  A row still locked by the earlier
    process (stalled in its transaction) is left to lease expiry.
    """

    def mine(conn: sa.Connection) -> sa.Select[tuple[int]]:
        return sa.select(jobs.c.id).where(
            jobs.c.owner == owner, jobs.c.state == JobState.CLAIMED.value
        )

    return _requeue(database, mine)


def _requeue(database: Database, claimed: Callable[[sa.Connection], sa.Select[tuple[int]]]) -> int:
    """The jobs `claimed` selects wait again, a batch per transaction; returns how many.

    The rows are found first (skipping locked ones) and then updated by id:
    an UPDATE that searched the claimed rows itself would lock its way through
    other nodes' fresh claims and deadlock with them (InnoDB).  A deadlock
    that still happens rolls the batch back, and it is tried again.
    """
    engine, dialect = database.engine, database.dialect

    def batch() -> int:
        with engine.begin() as conn:
            query = claimed(conn).limit(RECOVER_BATCH)
            ids = list(conn.execute(dialect.lock_skipping_locked(query)).scalars())
            if ids:
                conn.execute(
                    jobs.update()
                    .where(jobs.c.id.in_(ids))
                    .values(state=JobState.WAITING.value, owner=None, lease_until=None)
                )
        return len(ids)

    total = 0
    while True:
        count = retrying_conflicts(batch)
        total += count
        if count < RECOVER_BATCH:
            return total


def still_held(conn: sa.Connection, owner: str, claims: Sequence[tuple[int, int]]) -> set[int]:
    """Of `claims` (job id, attempt), the jobs not claimed again since; locked until commit.

    A job is still this claim's when its row has the claim's attempt number
    and `owner` or nobody holds it (its lease expired, nobody took it yet).
    A higher attempt means it was claimed again, by another node or by
    `owner` itself, and runs again.  Run inside the transaction that records
    the outcomes, so nobody can claim the jobs between this check and the write.
    """
    if not claims:
        return set()
    attempts = dict(claims)
    query = (
        sa.select(jobs.c.id, jobs.c.attempt)
        .where(
            jobs.c.id.in_(list(attempts)),
            sa.or_(jobs.c.owner == owner, *unowned()),
        )
        .with_for_update()
    )
    return {row.id for row in conn.execute(query) if row.attempt == attempts[row.id]}
