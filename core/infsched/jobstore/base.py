"""The JobStore protocol and the values that cross it.

The job store knows nothing of entity classes: it keeps the entity's id, due
time and a JSON snapshot.  The engine turns them back into typed entities.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple, Protocol

import attrs
import sqlalchemy as sa

from infsched.errors import InfschedError
from infsched.flow_limits import Lane


def job_key(repository: str, entity_id: object, due_at: datetime) -> str:
    """The job's unique key: one per (repository, entity id, due time).

    Stable across nodes and restarts, so a second fetch of the same entity
    inserts nothing, and executors can pass it downstream as an idempotency key.
    """
    return f"{repository}:{entity_id}:{due_at:%Y%m%dT%H%M%S.%fZ}"


def entity_of_key(key: str) -> str | None:
    """The entity id a job key names, or None if `key` does not look like one.

    The repository name holds no colon and the due-time part none either, so
    whatever lies between the first and the last colon is the entity id.
    """
    first, last = key.find(":"), key.rfind(":")
    if first < 0 or last <= first:
        return None
    return key[first + 1 : last]


def entity_key_prefix(repository: str, entity_id: object) -> str:
    """What every job key of one entity of `repository` starts with."""
    return f"{repository}:{entity_id}:"


#: Longest flow key a job keeps (an entity field's value, cut to this length).
FLOW_KEY_LENGTH = 191


class JobState(enum.Enum):
    """States of a row in the hot job table."""

    WAITING = "waiting"
    CLAIMED = "claimed"
    #: Out of attempts (or a permanent error); kept until retried or cancelled.
    DEAD = "dead"


class Outcome(enum.Enum):
    """What became of one run (or non-run) of a job, as history records it."""

    SUCCEEDED = "succeeded"
    #: This attempt failed; the job will be retried.
    FAILED = "failed"
    #: Late beyond misfire_threshold under the do_nothing policy: not run.
    MISFIRED = "misfired"
    #: Failed for good: out of attempts, a permanent error, or a timeout on the last attempt.
    DEAD = "dead"
    CANCELLED = "cancelled"
    #: A schedule's occurrence due while its previous run was in flight (overlap ``skip``).
    SKIPPED = "skipped"

    @property
    def ends_job(self) -> bool:
        """Whether a store deletes the job's row on this outcome (FAILED reschedules it,
        DEAD keeps it as a dead letter)."""
        return self in _ENDING


_ENDING = frozenset({Outcome.SUCCEEDED, Outcome.MISFIRED, Outcome.CANCELLED, Outcome.SKIPPED})


@attrs.frozen
class NewJob:
    """A job the fetcher adds for one entity."""

    job_key: str
    repository: str
    executor: str
    entity_id: str
    due_at: datetime
    priority: int
    payload: str  # JSON snapshot of the entity
    #: The lane's flow key: the value of the entity field its repository names ('' for none).
    flow_key: str = ""


class ClaimedJob(NamedTuple):
    """A job this node claimed and holds a lease on.

    A NamedTuple, not a frozen attrs class like the other values here: one is
    built for every job a node runs, and a tuple builds in a third of the time.
    """

    id: int
    job_key: str
    repository: str
    executor: str
    entity_id: str
    due_at: datetime
    run_at: datetime
    priority: int
    #: This run's attempt number (1 = first run).
    attempt: int
    #: The entity's JSON snapshot, decoded (EntitySpec.from_json reads it).
    snapshot: dict[str, Any]
    #: The database's clock when the claim was made; misfires are judged against it.
    claimed_at: datetime
    #: The job's flow key (its lane is (repository, executor, flow_key)).
    flow_key: str = ""
    #: Its start slot under a rate limit, by the database's clock: it may not start
    #: before (None: at once).  Nodes hold it by their clock corrected to the
    #: database's (infsched.dbtime), which a claim's own round trip would not be.
    start_at: datetime | None = None


class Finished(NamedTuple):
    """The end of one claimed run, reported back to the store (a NamedTuple, as ClaimedJob)."""

    job: ClaimedJob
    outcome: Outcome
    started_at: datetime | None
    finished_at: datetime
    error: str | None = None
    #: For Outcome.FAILED: when the retry may run.
    retry_at: datetime | None = None


@attrs.frozen
class FlowRules:
    """What a claim must hold to beyond due order (docs/flow-control.md)."""

    #: The targets (``executor:NAME``, ``repository:NAME``, ``key:VALUE``) that have a
    #: row in the limits table: a claim reads only those rows, and only for lanes under them.
    limited: frozenset[str] = frozenset()
    #: Seconds ahead of now a claim may give rate-limited jobs their start slots.
    horizon: float = 1.0


class JobNotFoundError(InfschedError):
    """No job has the key given."""


class JobStateError(InfschedError):
    """The job is not in a state the operation applies to."""


#: The columns of a job's live row, as `JobStore.job_row` and its kin return it
#: (times naive UTC, as the SQL store's table holds them; no lease is None).
JOB_ROW_COLUMNS = (
    "id",
    "job_key",
    "repository",
    "executor",
    "entity_id",
    "due_at",
    "run_at",
    "priority",
    "flow_key",
    "state",
    "attempt",
    "owner",
    "lease_until",
    "payload",
    "last_error",
    "created_at",
)

#: What `JobStore.add_jobs_from`'s SELECT produces, in this order: what a new job has.
COPY_COLUMNS = tuple(
    c for c in JOB_ROW_COLUMNS if c not in {"id", "owner", "lease_until", "last_error"}
)

#: A job's live row: JOB_ROW_COLUMNS to their values (keyed by name; a SQL row
#: mapping, which also takes columns as keys, is one).
LiveRow = Mapping[Any, Any]


def _aware(value: datetime | None) -> datetime | None:
    return None if value is None else value.replace(tzinfo=UTC)


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


@attrs.frozen
class JobRow:
    """One job of the store (a waiting, running or dead job), without its payload."""

    job_key: str
    repository: str
    executor: str
    entity_id: str
    state: str
    attempt: int
    priority: int
    due_at: datetime
    run_at: datetime
    owner: str | None
    lease_until: datetime | None
    last_error: str | None
    created_at: datetime
    flow_key: str = ""

    @classmethod
    def from_row(cls, row: LiveRow) -> JobRow:
        values = {f.name: row[f.name] for f in attrs.fields(cls)}
        for name in ("due_at", "run_at", "lease_until", "created_at"):
            values[name] = _aware(values[name])
        return cls(**values)

    def as_json(self) -> dict[str, Any]:
        values = attrs.asdict(self)
        for name in ("due_at", "run_at", "lease_until", "created_at"):
            values[name] = _iso(values[name])
        return values


@attrs.frozen
class StateCount:
    """The jobs of one repository in one state."""

    repository: str
    state: str
    total: int
    #: Of those, jobs whose run time is at or before `now`: due.
    due: int
    #: Of those, jobs whose run time is at or before `horizon` (all of them without one).
    before_horizon: int
    #: Of those, jobs owned by `owner` (none without one).
    owned: int


@attrs.frozen
class LaneCount:
    """The due jobs waiting in one lane."""

    lane: Lane
    #: Waiting jobs whose run time is at or before the `now` asked about.
    due: int
    #: The oldest run time among them (naive UTC, as the store keeps times).
    oldest: datetime


HistoryWriter = Callable[[sa.Connection, Sequence[Finished]], None]
#: Called with (done, total) as a bulk operation advances.
Progress = Callable[[int, int], None]


class JobStore(Protocol):
    """Where jobs wait between the fetcher and the workers.

    A store is registered through the ``register_job_stores`` hook and
    selected by ``job_store`` in the configuration.  Every store must pass
    `infsched.testing.jobstore.JobStoreContract`.

    Connections passed in (`conn`) are connections to the configured
    database (`engine`), inside the caller's transaction: a store that keeps
    its jobs elsewhere must make what it does on them take effect only if
    that transaction commits.
    """

    @property
    def engine(self) -> sa.Engine:
        """The configured database: history and the node's own tables live there."""
        ...

    @property
    def job_rows(self) -> sa.FromClause | None:
        """The job rows in `engine`'s database, for the history writer to join in `finish`.

        Columns ``id``, ``job_key``, ``repository``, ``entity_id``,
        ``executor``, ``due_at``; None for a store that keeps none there
        (history is then written from the `Finished` values).
        """
        ...

    def create_schema(self) -> list[str]:
        """Create the node's tables and the store's own that are missing; the names created."""
        ...

    def missing_tables(self) -> list[str]:
        """The store's own tables that do not exist yet (none for a store without tables)."""
        ...

    def db_now(self, conn: sa.Connection) -> datetime:
        """The clock claims and leases are judged by (UTC)."""
        ...

    # -- the fetcher --

    def add_jobs(self, conn: sa.Connection, jobs: Sequence[NewJob]) -> int:
        """Insert jobs, ignoring keys that exist; on `conn`, in the caller's transaction.

        Returns how many were inserted; a store may count keys it found too.
        """
        ...

    def add_jobs_from(self, conn: sa.Connection, rows: sa.Select[Any]) -> int:
        """Add the jobs `rows` (COPY_COLUMNS, in order) produces on `conn`, as `add_jobs`."""
        ...

    def add_jobs_due_now(self, conn: sa.Connection, jobs: Sequence[NewJob]) -> None:
        """Add jobs as `add_jobs`, and make those waiting due now (by `db_now`)."""
        ...

    # -- the workers --

    def claim_due(
        self,
        owner: str,
        limit: int,
        lease_seconds: float,
        repositories: Sequence[str],
        flow: FlowRules | None = None,
    ) -> list[ClaimedJob]:
        """Claim up to `limit` due jobs of `repositories`.

        Highest priority first; within a priority the lanes (repository,
        executor, flow key) take turns, each lane oldest run time first.  Under
        `flow`, a lane takes no more than the limits of its targets allow, and
        each job of a rate-limited lane carries its start slot (`start_at`).
        """
        ...

    def finish(self, owner: str, results: Sequence[Finished], write_history: HistoryWriter) -> int:
        """Record outcomes: delete done jobs, reschedule retries, keep dead letters.

        `write_history` is called first, on a connection to `engine` inside
        the transaction that records the outcomes.  Returns how many
        outcomes came too late: their job was gone or claimed again.
        """
        ...

    def still_held(
        self, conn: sa.Connection, owner: str, claims: Sequence[tuple[int, int]]
    ) -> set[int]:
        """Of `claims` (job id, attempt), the jobs not claimed again since.

        Called from `finish`'s `write_history`, on its connection: nobody
        may claim those jobs until that transaction ends.
        """
        ...

    def release(self, owner: str, job_ids: Sequence[int]) -> int:
        """Give back claimed jobs that were never started."""
        ...

    def defer(self, owner: str, deferred: Sequence[tuple[int, datetime]]) -> int:
        """Give claimed jobs back to wait until the time given with each (job id, run time).

        Their claim does not count as an attempt: the run was throttled by the
        system it called, not failed.  Jobs `owner` no longer holds are left alone.
        """
        ...

    def renew_leases(self, owner: str, job_ids: Sequence[int], lease_seconds: float) -> int:
        """Extend the leases of the jobs `owner` holds; only those in `job_ids`.

        A node names the jobs it holds in memory: a claim whose commit landed
        but whose answer was lost must not be kept alive by renewals, or its
        jobs would never run anywhere.
        """
        ...

    def recover_expired(self) -> int:
        """Claimed jobs whose lease expired (by `db_now`) wait again; returns how many."""
        ...

    def reclaim_own(self, owner: str) -> int:
        """Jobs claimed under `owner` by an earlier process wait again; returns how many."""
        ...

    # -- gauges, statistics, the dashboard --

    def count_jobs(
        self,
        conn: sa.Connection,
        now: datetime,
        *,
        horizon: datetime | None = None,
        owner: str | None = None,
        repositories: Sequence[str] | None = None,
    ) -> list[StateCount]:
        """Counts per (repository, state); times naive UTC."""
        ...

    def count_lanes(
        self, conn: sa.Connection, now: datetime, *, targets: Collection[str] | None = None
    ) -> list[LaneCount]:
        """The due waiting jobs per lane (run time at or before `now`, naive UTC), of every
        repository; only lanes that have some, and with `targets` (limit target ids) only
        lanes under one of them.  The limit gauges and the dashboard read it."""
        ...

    # -- management --

    def list_jobs(
        self,
        *,
        state: str | None = None,
        repository: str | None = None,
        due_before: datetime | None = None,
        limit: int = 100,
    ) -> list[JobRow]:
        """Jobs soonest due first (then by id); `due_before` is aware."""
        ...

    def job_row(self, key: str) -> LiveRow | None:
        """The live row of the job `key`, if it is waiting, claimed or dead."""
        ...

    def entity_job_rows(self, entity_id: str, repository: str | None = None) -> list[LiveRow]:
        """The live rows of an entity's jobs, in every repository or in `repository`."""
        ...

    def keys_of(self, ref: str, repository: str) -> list[str]:
        """The sorted keys of the jobs of `repository` that `ref` names: its own, or an entity's."""
        ...

    def job_rows_of(self, keys: Sequence[str]) -> list[LiveRow]:
        """The live rows of the jobs `keys` (those that exist), held while they are read."""
        ...

    def cancel_jobs(
        self,
        keys: Sequence[str],
        check: Callable[[Sequence[LiveRow]], None],
        write_history: Callable[[sa.Connection, Sequence[LiveRow]], None],
    ) -> int:
        """Delete the jobs `keys` unless claimed, in one transaction; returns how many.

        `check` sees the rows first (held: nobody claims them meanwhile) and
        raises to change nothing; `write_history` then records them on a
        connection to `engine`, in the same transaction.  A job claimed
        meanwhile raises JobStateError, and nothing changes.
        """
        ...

    def dead_job_ids(self, repository: str | None = None) -> list[int]:
        """The ids of the dead letters (of `repository`), in id order."""
        ...

    def retry_dead(self, job_ids: Sequence[int], progress: Progress | None = None) -> int:
        """Those of `job_ids` still dead wait again, due now, attempts reset; returns how many."""
        ...

    def run_now(self, job_ids: Sequence[int]) -> int:
        """Those of `job_ids` still waiting become due now; returns how many."""
        ...

    def knows_repository(self, conn: sa.Connection, name: str) -> bool:
        """Whether a job of repository `name` is in the store."""
        ...

    def repository_names(self, conn: sa.Connection) -> set[str]:
        """The repositories the store holds jobs of."""
        ...
