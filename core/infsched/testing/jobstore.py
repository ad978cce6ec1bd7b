"""JobStoreContract: the tests every job store must pass, for plugin authors.

A job store plugin's test module subclasses `JobStoreContract` and gives it
a ``store`` fixture that builds its store on a database (the handle the
store gets holds the engine where history and the node's own tables live)::

    import pytest
    from infsched.database import open_database
    from infsched.dburl import DatabaseUrl
    from infsched.testing.jobstore import JobStoreContract

    class TestMyStore(JobStoreContract):
        @pytest.fixture
        def store(self, tmp_path):
            database = open_database(DatabaseUrl(f"sqlite:///{tmp_path / 'store.db'}"))
            yield MyStore(database)
            database.dispose()

Each test creates the schema first (`JobStore.create_schema`), adds jobs
due a minute ago on the store's own clock (`db_now`), and checks what the
engine and the management commands rely on: adding is idempotent by key
and takes effect only when the caller's transaction commits; claims take
the highest priority first, then the oldest, only due jobs, only of the
repositories named (how a paused repository is skipped); leases expire and
are recovered, renewed and released; outcomes delete, reschedule or
dead-letter, and a late one is counted and changes nothing; dead letters
are retried; jobs are cancelled and run now; and the reads behind ``jobs
list``, ``jobs show``, ``stats`` and the repository-name checks, and the
due jobs per lane the limit gauges and the dashboard read.

Flow control (docs/flow-control.md) is part of the contract too.  Jobs wait
in *lanes* (repository, executor, flow key): within a priority the lanes
take turns at a claim, ``ceil(left / lanes)`` each, what one leaves going to
the others, and the lane that goes first turns with every claim; each job
carries its flow key back (`ClaimedJob.flow_key`).  Under `FlowRules`, a
lane whose targets (``executor:NAME``, ``repository:NAME``, ``key:VALUE``)
are in `FlowRules.limited` takes no more than their rows in the limits table
allow: a rate gives start slots up to `FlowRules.horizon` seconds ahead
(`ClaimedJob.start_at`: the burst at the claim's clock, then one every ``1 / rate``
seconds, the next claim going on where the last left off), a concurrency cap
counts every owner's claimed jobs, and a hold (`LimitStore.hold`) takes
nothing until its time.  The tests put those rows with `LimitStore` on the
store's database (`engine`), where they live whatever keeps the jobs;
`infsched.limit_rows` locks, reads and writes them for a claim.  No rules,
or none limited, leaves claims to priority and due order.  A deferred job
(`JobStore.defer`, a throttled run) waits again until its time, its
attempt not counted; one another owner holds is left alone.

Importing this module needs pytest, which the core does not depend on.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.clock import utc_naive
from infsched.database import database_of
from infsched.flow_limits import FlowLimit, Limit, LimitScope, LimitTarget
from infsched.jobstore.base import (
    COPY_COLUMNS,
    JOB_ROW_COLUMNS,
    ClaimedJob,
    Finished,
    FlowRules,
    JobState,
    JobStateError,
    JobStore,
    LiveRow,
    NewJob,
    Outcome,
    job_key,
)
from infsched.limit_store import LimitStore

__all__ = ["JobStoreContract"]

#: Seconds a short lease lasts in the tests that let one expire.
SHORT_LEASE = 0.2
LONG_LEASE = 300.0
WAITING, CLAIMED, DEAD = JobState.WAITING.value, JobState.CLAIMED.value, JobState.DEAD.value


def _now(store: JobStore) -> datetime:
    with store.engine.connect() as conn:
        return store.db_now(conn)


def new_job(
    repository: str,
    entity_id: object,
    due_at: datetime,
    priority: int = 0,
    executor: str = "x",
    flow_key: str = "",
) -> NewJob:
    """A job of `repository` for entity `entity_id`, its snapshot naming the entity."""
    return NewJob(
        job_key=job_key(repository, entity_id, due_at),
        repository=repository,
        executor=executor,
        entity_id=str(entity_id),
        due_at=due_at,
        priority=priority,
        payload=json.dumps({"id": str(entity_id)}),
        flow_key=flow_key,
    )


def _limits(store: JobStore) -> LimitStore:
    """The limits table of the store's database, as every node and `infsched limits` see it."""
    return LimitStore(database_of(store.engine))


def _rules(limits: LimitStore, horizon: float = 1.0) -> FlowRules:
    """What a node's claims follow: the targets with a row, read now (not the cached set)."""
    return FlowRules(limited=limits.targets(fresh=True), horizon=horizon)


def _limit(scope: LimitScope, name: str, **limit: Any) -> Limit:
    return Limit(LimitTarget(scope, name), FlowLimit(**limit))


def _start_after(job: ClaimedJob) -> float:
    """Seconds from the claim's clock to the job's start slot (0: none, at once)."""
    return 0.0 if job.start_at is None else (job.start_at - job.claimed_at).total_seconds()


def _no_history(conn: sa.Connection, results: Sequence[Finished]) -> None:
    pass


class JobStoreContract:
    """Subclass it in a test module and give it a ``store`` fixture; see the module docstring."""

    @pytest.fixture
    def jobs(self, store: JobStore) -> JobStore:
        """`store`, its schema created (twice: creating it again must change nothing)."""
        store.create_schema()
        assert store.create_schema() == []
        assert store.missing_tables() == []
        return store

    # -- helpers --

    @staticmethod
    def add(store: JobStore, jobs: Sequence[NewJob]) -> int:
        with store.engine.begin() as conn:
            return store.add_jobs(conn, jobs)

    @staticmethod
    def due(store: JobStore, count: int, repository: str = "r") -> list[NewJob]:
        """`count` jobs of `repository` due a minute ago and earlier, oldest last added."""
        now = _now(store)
        return [new_job(repository, i, now - timedelta(seconds=60 + i)) for i in range(count)]

    @staticmethod
    def finished(
        job: ClaimedJob,
        outcome: Outcome,
        error: str | None = None,
        retry_at: datetime | None = None,
    ) -> Finished:
        return Finished(job, outcome, job.claimed_at, job.claimed_at, error, retry_at)

    # -- adding --

    def test_adding_is_idempotent_by_key(self, jobs: JobStore) -> None:
        first = self.due(jobs, 3)
        assert self.add(jobs, first) == 3
        more = [*first, new_job("r", "new", first[0].due_at)]
        # The count of a second add is not checked: MySQL counts a key it found as a row.
        self.add(jobs, more)
        assert self.add(jobs, []) == 0
        listed = jobs.list_jobs()
        assert sorted(j.job_key for j in listed) == sorted(j.job_key for j in more)
        assert {j.state for j in listed} == {WAITING}
        assert {j.attempt for j in listed} == {0}

    def test_added_jobs_appear_only_when_the_transaction_commits(self, jobs: JobStore) -> None:
        with jobs.engine.connect() as conn:
            conn.begin()
            jobs.add_jobs(conn, self.due(jobs, 2))
            conn.rollback()
        assert jobs.list_jobs() == []
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"]) == []
        with jobs.engine.connect() as conn:
            conn.begin()
            jobs.add_jobs(conn, self.due(jobs, 2))
            conn.commit()
        assert len(jobs.claim_due("n1", 10, LONG_LEASE, ["r"])) == 2

    def test_jobs_come_from_a_select_of_the_new_job_columns(self, jobs: JobStore) -> None:
        job = self.due(jobs, 1)[0]
        values = {
            "job_key": job.job_key,
            "repository": job.repository,
            "executor": job.executor,
            "entity_id": job.entity_id,
            "due_at": utc_naive(job.due_at),
            "run_at": utc_naive(job.due_at),
            "priority": 7,
            "flow_key": "k1",
            "state": WAITING,
            "attempt": 0,
            "payload": job.payload,
            "created_at": utc_naive(job.due_at),
        }
        columns: list[sa.ColumnElement[Any]] = [
            sa.literal(values[c]).label(c) for c in COPY_COLUMNS
        ]
        rows = sa.select(*columns)
        with jobs.engine.begin() as conn:
            assert jobs.add_jobs_from(conn, rows) == 1
        with jobs.engine.begin() as conn:
            jobs.add_jobs_from(conn, rows)
        assert [j.job_key for j in jobs.list_jobs()] == [job.job_key]
        [claimed] = jobs.claim_due("n1", 10, LONG_LEASE, ["r"])
        assert (claimed.job_key, claimed.priority, claimed.attempt) == (job.job_key, 7, 1)
        assert claimed.flow_key == "k1"
        assert claimed.snapshot == {"id": job.entity_id}
        assert claimed.due_at == job.due_at

    def test_a_job_added_due_now_is_claimed_before_its_due_time(self, jobs: JobStore) -> None:
        later = new_job("r", "soon", _now(jobs) + timedelta(hours=1))
        with jobs.engine.begin() as conn:
            jobs.add_jobs_due_now(conn, [later])
        [claimed] = jobs.claim_due("n1", 10, LONG_LEASE, ["r"])
        assert claimed.job_key == later.job_key
        assert claimed.due_at == later.due_at
        assert claimed.run_at <= claimed.claimed_at

    # -- claiming --

    def test_claims_take_the_highest_priority_then_the_oldest(self, jobs: JobStore) -> None:
        now = _now(jobs)
        added = [
            new_job("r", "low-old", now - timedelta(minutes=9), priority=0),
            new_job("r", "high-new", now - timedelta(minutes=1), priority=5),
            new_job("r", "high-old", now - timedelta(minutes=5), priority=5),
            new_job("r", "mid", now - timedelta(minutes=2), priority=1),
            new_job("r", "low-new", now - timedelta(minutes=3), priority=0),
        ]
        self.add(jobs, added)
        first = jobs.claim_due("n1", 2, LONG_LEASE, ["r"])
        rest = jobs.claim_due("n1", 10, LONG_LEASE, ["r"])
        assert [j.entity_id for j in first] == ["high-old", "high-new"]
        assert [j.entity_id for j in rest] == ["mid", "low-old", "low-new"]
        assert [j.priority for j in first + rest] == [5, 5, 1, 0, 0]

    def test_only_due_jobs_are_claimed(self, jobs: JobStore) -> None:
        now = _now(jobs)
        self.add(jobs, [new_job("r", "due", now - timedelta(seconds=5))])
        self.add(jobs, [new_job("r", "later", now + timedelta(hours=1), priority=9)])
        assert [j.entity_id for j in jobs.claim_due("n1", 10, LONG_LEASE, ["r"])] == ["due"]
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"]) == []
        assert jobs.claim_due("n1", 0, LONG_LEASE, ["r"]) == []

    def test_claims_skip_repositories_not_named(self, jobs: JobStore) -> None:
        # A paused repository is left out of the names a node claims for.
        self.add(jobs, self.due(jobs, 2, "paused") + self.due(jobs, 2, "served"))
        claimed = jobs.claim_due("n1", 10, LONG_LEASE, ["served"])
        assert {j.repository for j in claimed} == {"served"}
        assert jobs.claim_due("n1", 10, LONG_LEASE, []) == []
        both = jobs.claim_due("n1", 10, LONG_LEASE, ["paused", "served"])
        assert {j.repository for j in both} == {"paused"}

    def test_a_claim_leases_the_job_to_its_node(self, jobs: JobStore) -> None:
        [job] = self.due(jobs, 1)
        self.add(jobs, [job])
        [claimed] = jobs.claim_due("n1", 1, LONG_LEASE, ["r"])
        assert (claimed.job_key, claimed.attempt, claimed.executor) == (job.job_key, 1, "x")
        assert claimed.snapshot == {"id": job.entity_id}
        row = jobs.job_row(job.job_key)
        assert row is not None
        assert set(JOB_ROW_COLUMNS) <= set(row.keys())
        assert (row["state"], row["owner"], row["attempt"]) == (CLAIMED, "n1", 1)
        assert row["lease_until"] > utc_naive(claimed.claimed_at)
        assert jobs.claim_due("n2", 1, LONG_LEASE, ["r"]) == []

    # -- lanes and flow limits --

    def test_lanes_take_turns_within_a_priority(self, jobs: JobStore) -> None:
        now = _now(jobs)
        burst = [
            new_job("r", f"a{i}", now - timedelta(minutes=10, seconds=i), flow_key="a")
            for i in range(100)
        ]
        # Due after all of a's: in due order alone they would wait behind 100 jobs.
        late = [new_job("r", f"b{i}", now - timedelta(seconds=30), flow_key="b") for i in range(5)]
        self.add(jobs, burst + late)
        claimed = jobs.claim_due("n1", 20, LONG_LEASE, ["r"])
        assert Counter(j.flow_key for j in claimed) == {"a": 15, "b": 5}
        assert {j.entity_id for j in claimed if j.flow_key == "b"} == {f"b{i}" for i in range(5)}
        # Within its lane, the oldest first.
        assert [j.entity_id for j in claimed if j.flow_key == "a"] == [
            f"a{i}" for i in range(99, 84, -1)
        ]
        assert [r.flow_key for r in jobs.list_jobs(state=CLAIMED, limit=200)].count("b") == 5

    def test_a_claim_shares_out_evenly_and_the_first_lane_turns(self, jobs: JobStore) -> None:
        now = _now(jobs)
        self.add(
            jobs,
            [
                new_job("r", f"{key}{i}", now - timedelta(minutes=k + 1, seconds=i), flow_key=key)
                for k, key in enumerate(["k0", "k1", "k2"])
                for i in range(10)
            ],
        )
        assert Counter(j.flow_key for j in jobs.claim_due("n1", 12, LONG_LEASE, ["r"])) == {
            "k0": 4,
            "k1": 4,
            "k2": 4,
        }
        assert Counter(j.flow_key for j in jobs.claim_due("n1", 6, LONG_LEASE, ["r"])) == {
            "k0": 2,
            "k1": 2,
            "k2": 2,
        }
        # Claims of one job each: the lane that goes first turns with every claim.
        singles = [jobs.claim_due("n1", 1, LONG_LEASE, ["r"]) for _ in range(3)]
        assert Counter(j.flow_key for one in singles for j in one) == {"k0": 1, "k1": 1, "k2": 1}
        # A lane that runs dry leaves its share to the others.
        rest = jobs.claim_due("n1", 100, LONG_LEASE, ["r"])
        assert Counter(j.flow_key for j in rest) == {"k0": 3, "k1": 3, "k2": 3}

    def test_without_flow_rules_a_claim_follows_priority_and_due_order(
        self, jobs: JobStore
    ) -> None:
        now = _now(jobs)
        limits = _limits(jobs)
        # A limit whose target the rules do not name holds nothing back.
        limits.set(_limit(LimitScope.EXECUTOR, "x", rate=0.001, max_concurrent=1))
        added = [
            new_job("r", "low-old", now - timedelta(minutes=9), flow_key="a"),
            new_job("r", "low-mid", now - timedelta(minutes=8), flow_key="a"),
            new_job("r", "low-new", now - timedelta(minutes=7), flow_key="a"),
            new_job("r", "high-a-new", now - timedelta(minutes=1), priority=5, flow_key="a"),
            new_job("r", "high-a-old", now - timedelta(minutes=2), priority=5, flow_key="a"),
            new_job("r", "high-b", now - timedelta(minutes=1), priority=5, flow_key="b"),
        ]
        self.add(jobs, added)
        first = jobs.claim_due("n1", 4, LONG_LEASE, ["r"])
        assert [j.priority for j in first] == [5, 5, 5, 0]
        assert [j.entity_id for j in first if j.flow_key == "a"] == [
            "high-a-old",
            "high-a-new",
            "low-old",
        ]
        rest = jobs.claim_due("n1", 10, LONG_LEASE, ["r"], FlowRules())
        assert [j.entity_id for j in rest] == ["low-mid", "low-new"]
        assert {j.start_at for j in first + rest} == {None}

    def test_a_rate_limited_claim_takes_its_allowance_in_spaced_slots(self, jobs: JobStore) -> None:
        limits = _limits(jobs)
        limits.set(_limit(LimitScope.EXECUTOR, "x", rate=2.0, burst=2))
        self.add(jobs, self.due(jobs, 10))
        flow = _rules(limits, horizon=1.5)
        # Slots up to 1.5 s ahead at 2 a second, two of them back to back: 1.5 * 2 + 2.
        claimed = jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow)
        assert [_start_after(j) for j in claimed] == pytest.approx(
            [0.0, 0.0, 0.5, 1.0, 1.5], abs=0.001
        )
        # The slots are taken: a claim right after has none left.
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow) == []
        stored = limits.get(LimitTarget(LimitScope.EXECUTOR, "x"))
        assert stored is not None
        assert stored.started == 5  # the rate's state is written back with the claim

    def test_a_second_claim_continues_the_rate_slots(self, jobs: JobStore) -> None:
        limits = _limits(jobs)
        limits.set(_limit(LimitScope.EXECUTOR, "x", rate=2.0, burst=2))
        self.add(jobs, self.due(jobs, 10))
        flow = _rules(limits, horizon=1.5)
        first = jobs.claim_due("n1", 3, LONG_LEASE, ["r"], flow)
        second = jobs.claim_due("n2", 10, LONG_LEASE, ["r"], flow)
        t0 = first[0].claimed_at

        def slots(claimed: list[ClaimedJob]) -> list[float]:
            """Each job's start, in seconds after the first claim."""
            return [(j.claimed_at - t0).total_seconds() + _start_after(j) for j in claimed]

        assert slots(first) == pytest.approx([0.0, 0.0, 0.5], abs=0.001)
        # Where the first left off, not a fresh burst; within the same allowance.
        assert slots(second) == pytest.approx([1.0, 1.5], abs=0.001)
        assert len({j.id for j in first + second}) == 5

    def test_a_concurrency_cap_counts_every_owners_claimed_jobs(self, jobs: JobStore) -> None:
        limits = _limits(jobs)
        limits.set(_limit(LimitScope.KEY, "acme", max_concurrent=3))
        now = _now(jobs)
        self.add(
            jobs,
            [
                new_job("r", i, now - timedelta(minutes=1, seconds=i), flow_key="acme")
                for i in range(6)
            ]
            + [new_job("s", i, now - timedelta(minutes=1), flow_key="other") for i in range(2)],
        )
        flow = _rules(limits)
        held = jobs.claim_due("n2", 2, LONG_LEASE, ["r"], flow)
        assert len(held) == 2
        mine = jobs.claim_due("n1", 10, LONG_LEASE, ["r", "s"], flow)
        # The cap's one place left; the other key is not under it.
        assert Counter(j.flow_key for j in mine) == {"acme": 1, "other": 2}
        assert {j.start_at for j in mine} == {None}
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r", "s"], flow) == []
        # A finished job frees its place, whoever held it.
        assert jobs.finish("n2", [self.finished(held[0], Outcome.SUCCEEDED)], _no_history) == 0
        [after_finish] = jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow)
        assert after_finish.flow_key == "acme"
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow) == []
        # So does a released one: it is the next to go, its attempt not counted.
        assert jobs.release("n1", [after_finish.id]) == 1
        [again] = jobs.claim_due("n3", 10, LONG_LEASE, ["r"], flow)
        assert (again.id, again.attempt) == (after_finish.id, after_finish.attempt)
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow) == []

    def test_a_held_target_takes_nothing_until_its_time(self, jobs: JobStore) -> None:
        limits = _limits(jobs)
        self.add(
            jobs,
            [
                new_job("r", f"{key}{i}", due_at, flow_key=key)
                for key in ("a", "b")
                for i, due_at in enumerate(j.due_at for j in self.due(jobs, 3))
            ],
        )
        until = _now(jobs) + timedelta(seconds=0.8)
        limits.hold(["key:a"], until)
        flow = _rules(limits)
        assert Counter(j.flow_key for j in jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow)) == {
            "b": 3
        }
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow) == []
        while _now(jobs) <= until:
            time.sleep(0.05)
        after = jobs.claim_due("n1", 10, LONG_LEASE, ["r"], flow)
        assert Counter(j.flow_key for j in after) == {"a": 3}

    # -- leases --

    def test_expired_leases_are_recovered_and_claimed_again(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 3))
        jobs.claim_due("n2", 1, LONG_LEASE, ["r"])
        assert jobs.recover_expired() == 0  # a lease that has not run out stays
        jobs.claim_due("n1", 2, SHORT_LEASE, ["r"])
        time.sleep(SHORT_LEASE * 2)
        assert jobs.recover_expired() == 2
        assert jobs.recover_expired() == 0
        again = jobs.claim_due("n3", 10, LONG_LEASE, ["r"])
        assert sorted(j.attempt for j in again) == [2, 2]  # the same keys, the next attempt

    def test_renewed_leases_do_not_expire(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 3))
        claimed = jobs.claim_due("n1", 3, SHORT_LEASE, ["r"])
        kept = [claimed[0].id, claimed[1].id]
        assert jobs.renew_leases("n2", kept, LONG_LEASE) == 0  # not n2's
        assert jobs.renew_leases("n1", kept, LONG_LEASE) == 2
        assert jobs.renew_leases("n1", [], LONG_LEASE) == 0
        time.sleep(SHORT_LEASE * 2)
        assert jobs.recover_expired() == 1
        [again] = jobs.claim_due("n2", 10, LONG_LEASE, ["r"])
        assert again.id == claimed[2].id

    def test_a_restarted_node_takes_back_what_it_had_claimed(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 4))
        jobs.claim_due("n1", 3, LONG_LEASE, ["r"])
        jobs.claim_due("n2", 1, LONG_LEASE, ["r"])
        assert jobs.reclaim_own("n1") == 3
        rows = jobs.list_jobs()
        assert sorted((r.state, r.owner or "", r.attempt) for r in rows) == sorted(
            [(WAITING, "", 1)] * 3 + [(CLAIMED, "n2", 1)]
        )
        assert all(r.lease_until is None for r in rows if r.state == WAITING)

    def test_released_jobs_wait_again_without_an_attempt(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 2))
        claimed = jobs.claim_due("n1", 2, LONG_LEASE, ["r"])
        assert jobs.release("n2", [j.id for j in claimed]) == 0  # not n2's
        assert jobs.release("n1", [claimed[0].id]) == 1
        assert jobs.release("n1", []) == 0
        [again] = jobs.claim_due("n2", 10, LONG_LEASE, ["r"])
        assert (again.id, again.attempt) == (claimed[0].id, 1)

    def test_deferred_jobs_wait_again_until_their_time_without_an_attempt(
        self, jobs: JobStore
    ) -> None:
        self.add(jobs, self.due(jobs, 3))
        later, sooner, kept = jobs.claim_due("n1", 3, LONG_LEASE, ["r"])
        at = later.claimed_at + timedelta(hours=1)
        assert jobs.defer("n2", [(later.id, at)]) == 0  # not n2's
        assert jobs.defer("n1", []) == 0
        row = jobs.job_row(later.job_key)
        assert row is not None
        assert (row["state"], row["owner"]) == (CLAIMED, "n1")
        past = sooner.claimed_at - timedelta(seconds=1)
        assert jobs.defer("n1", [(later.id, at), (sooner.id, past)]) == 2
        row = jobs.job_row(later.job_key)
        assert row is not None
        assert (row["state"], row["owner"], row["attempt"]) == (WAITING, None, 0)
        assert (row["run_at"], row["lease_until"]) == (utc_naive(at), None)
        # The one due again is claimed at the attempt it had; the other waits its hour.
        [again] = jobs.claim_due("n2", 10, LONG_LEASE, ["r"])
        assert (again.id, again.attempt) == (sooner.id, sooner.attempt)
        assert again.run_at == past
        assert jobs.claim_due("n2", 10, LONG_LEASE, ["r"]) == []
        assert jobs.defer("n1", [(again.id, at)]) == 0  # n2's now
        row = jobs.job_row(kept.job_key)
        assert row is not None
        assert (row["state"], row["owner"]) == (CLAIMED, "n1")

    # -- finishing --

    def test_outcomes_delete_reschedule_or_dead_letter(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 5))
        ok, failed, dead, misfired, skipped = jobs.claim_due("n1", 5, LONG_LEASE, ["r"])
        retry_at = ok.claimed_at + timedelta(hours=1)
        written: list[list[Finished]] = []

        def write_history(conn: sa.Connection, results: Sequence[Finished]) -> None:
            assert isinstance(conn, sa.Connection)
            written.append(list(results))

        results = [
            self.finished(ok, Outcome.SUCCEEDED),
            self.finished(failed, Outcome.FAILED, error="boom", retry_at=retry_at),
            self.finished(dead, Outcome.DEAD, error="gone for good"),
            self.finished(misfired, Outcome.MISFIRED),
            self.finished(skipped, Outcome.SKIPPED),
        ]
        assert jobs.finish("n1", results, write_history) == 0
        assert written == [results]
        assert jobs.finish("n1", [], write_history) == 0
        assert jobs.job_row(ok.job_key) is None
        assert jobs.job_row(misfired.job_key) is None
        assert jobs.job_row(skipped.job_key) is None
        retried = jobs.job_row(failed.job_key)
        assert retried is not None
        assert (retried["state"], retried["attempt"], retried["owner"]) == (WAITING, 1, None)
        assert (retried["run_at"], retried["last_error"]) == (utc_naive(retry_at), "boom")
        letter = jobs.job_row(dead.job_key)
        assert letter is not None
        assert (letter["state"], letter["last_error"], letter["owner"]) == (
            DEAD,
            "gone for good",
            None,
        )
        assert jobs.claim_due("n1", 10, LONG_LEASE, ["r"]) == []  # not due yet, or dead
        assert jobs.dead_job_ids() == [dead.id]

    def test_a_late_outcome_is_counted_and_changes_nothing(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 2))
        first = jobs.claim_due("n1", 2, LONG_LEASE, ["r"])
        assert jobs.reclaim_own("n1") == 2
        second = jobs.claim_due("n1", 2, LONG_LEASE, ["r"])
        late = [
            self.finished(first[0], Outcome.SUCCEEDED),
            self.finished(first[1], Outcome.FAILED, error="boom", retry_at=first[1].claimed_at),
        ]
        assert jobs.finish("n1", late, _no_history) == 2
        rows = jobs.list_jobs()
        assert sorted((r.state, r.attempt, r.owner) for r in rows) == [(CLAIMED, 2, "n1")] * 2
        current = [self.finished(j, Outcome.SUCCEEDED) for j in second]
        assert jobs.finish("n1", current, _no_history) == 0
        assert jobs.list_jobs() == []

    def test_still_held_names_the_claims_nobody_took_since(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 3))
        mine = jobs.claim_due("n1", 3, SHORT_LEASE, ["r"])
        time.sleep(SHORT_LEASE * 2)
        assert jobs.recover_expired() == 3
        [taken] = jobs.claim_due("n2", 1, LONG_LEASE, ["r"])
        held: list[set[int]] = []

        def write_history(conn: sa.Connection, results: Sequence[Finished]) -> None:
            held.append(jobs.still_held(conn, "n1", [(r.job.id, r.job.attempt) for r in results]))

        lost = jobs.finish("n1", [self.finished(j, Outcome.SUCCEEDED) for j in mine], write_history)
        assert held == [{j.id for j in mine} - {taken.id}]
        assert lost == 1
        assert [r.owner for r in jobs.list_jobs()] == ["n2"]

    # -- management --

    def test_dead_letters_are_retried_due_now(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 2, "a") + self.due(jobs, 1, "b"))
        claimed = jobs.claim_due("n1", 3, LONG_LEASE, ["a", "b"])
        jobs.finish(
            "n1", [self.finished(j, Outcome.DEAD, error="no") for j in claimed], _no_history
        )
        assert jobs.dead_job_ids("b") == [j.id for j in claimed if j.repository == "b"]
        assert jobs.dead_job_ids() == sorted(j.id for j in claimed)
        seen: list[tuple[int, int]] = []
        retried = jobs.dead_job_ids("a")
        assert jobs.retry_dead(retried, lambda d, t: seen.append((d, t))) == 2
        assert seen[0] == (0, 2)
        assert seen[-1] == (2, 2)
        assert jobs.retry_dead(retried[:1]) == 0  # no longer dead
        again = jobs.claim_due("n2", 10, LONG_LEASE, ["a", "b"])
        assert sorted((j.repository, j.attempt) for j in again) == [("a", 1), ("a", 1)]

    def test_cancelling_deletes_and_records_unless_refused(self, jobs: JobStore) -> None:
        self.add(jobs, self.due(jobs, 3))
        keys = [j.job_key for j in jobs.list_jobs()]
        recorded: list[list[str]] = []

        def write_history(conn: sa.Connection, rows: Sequence[LiveRow]) -> None:
            recorded.append(sorted(r["job_key"] for r in rows))

        def refuse(rows: Sequence[LiveRow]) -> None:
            raise JobStateError("refused")

        with pytest.raises(JobStateError, match="refused"):
            jobs.cancel_jobs(keys[:2], refuse, write_history)
        assert len(jobs.list_jobs()) == 3
        assert recorded == []
        seen: list[list[str]] = []
        assert (
            jobs.cancel_jobs(
                keys[:2], lambda rows: seen.append([r["state"] for r in rows]), write_history
            )
            == 2
        )
        assert seen == [[WAITING, WAITING]]
        assert recorded == [sorted(keys[:2])]
        assert [j.job_key for j in jobs.list_jobs()] == [keys[2]]

    def test_run_now_makes_waiting_jobs_due(self, jobs: JobStore) -> None:
        now = _now(jobs)
        later = [new_job("r", i, now + timedelta(hours=1 + i)) for i in range(2)]
        self.add(jobs, later)
        ids = [r["id"] for r in jobs.job_rows_of([j.job_key for j in later])]
        assert jobs.run_now(ids[:1]) == 1
        [claimed] = jobs.claim_due("n1", 10, LONG_LEASE, ["r"])
        assert claimed.id == ids[0]
        assert jobs.run_now(ids[:1]) == 0  # claimed now, no longer waiting

    def test_jobs_are_listed_and_found(self, jobs: JobStore) -> None:
        now = _now(jobs)
        self.add(
            jobs,
            [
                new_job("a", 1, now - timedelta(minutes=3)),
                new_job("a", 1, now - timedelta(minutes=2)),
                new_job("a", 2, now - timedelta(minutes=1)),
                new_job("b", 1, now + timedelta(hours=1)),
            ],
        )
        jobs.claim_due("n1", 1, LONG_LEASE, ["a"])
        listed = jobs.list_jobs()
        assert [(j.repository, j.entity_id) for j in listed] == [
            ("a", "1"),
            ("a", "1"),
            ("a", "2"),
            ("b", "1"),
        ]
        assert listed[0].due_at.utcoffset() == timedelta(0)
        assert [j.state for j in listed] == [CLAIMED, WAITING, WAITING, WAITING]
        assert len(jobs.list_jobs(limit=2)) == 2
        assert [j.entity_id for j in jobs.list_jobs(state=CLAIMED)] == ["1"]
        assert [j.repository for j in jobs.list_jobs(repository="b")] == ["b"]
        assert len(jobs.list_jobs(due_before=now)) == 3
        key = listed[1].job_key
        row = jobs.job_row(key)
        assert row is not None
        assert (row["job_key"], row["repository"], row["entity_id"]) == (key, "a", "1")
        assert jobs.job_row("a:9:nothing") is None
        assert sorted(r["repository"] for r in jobs.entity_job_rows("1")) == ["a", "a", "b"]
        assert [r["repository"] for r in jobs.entity_job_rows("1", "b")] == ["b"]
        assert jobs.keys_of("1", "a") == sorted(j.job_key for j in listed[:2])
        assert jobs.keys_of(key, "a") == [key]
        assert jobs.keys_of("1", "c") == []
        found = jobs.job_rows_of([key, key, "a:9:nothing"])
        assert [r["job_key"] for r in found] == [key]
        with jobs.engine.connect() as conn:
            assert jobs.knows_repository(conn, "a")
            assert not jobs.knows_repository(conn, "c")
            assert jobs.repository_names(conn) == {"a", "b"}

    def test_jobs_are_counted_per_repository_and_state(self, jobs: JobStore) -> None:
        now = _now(jobs)
        self.add(jobs, self.due(jobs, 3, "a"))
        self.add(jobs, [new_job("a", "later", now + timedelta(minutes=10))])
        self.add(jobs, [new_job("b", "much-later", now + timedelta(hours=10))])
        jobs.claim_due("n1", 1, LONG_LEASE, ["a"])
        jobs.claim_due("n2", 1, LONG_LEASE, ["a"])
        with jobs.engine.connect() as conn:
            at = utc_naive(jobs.db_now(conn))
            counts = jobs.count_jobs(conn, at, horizon=at + timedelta(hours=1), owner="n1")
            only_b = jobs.count_jobs(conn, at, repositories=["b"])
        by = {(c.repository, c.state): c for c in counts}
        assert set(by) == {("a", WAITING), ("a", CLAIMED), ("b", WAITING)}
        waiting = by["a", WAITING]
        assert (waiting.total, waiting.due, waiting.before_horizon, waiting.owned) == (2, 1, 2, 0)
        claimed = by["a", CLAIMED]
        assert (claimed.total, claimed.owned) == (2, 1)
        assert (by["b", WAITING].total, by["b", WAITING].before_horizon) == (1, 0)
        assert [(c.repository, c.total, c.before_horizon) for c in only_b] == [("b", 1, 1)]

    def test_due_waiting_jobs_are_counted_per_lane(self, jobs: JobStore) -> None:
        now = _now(jobs)
        early = now - timedelta(minutes=5)

        def lane_job(entity: int, due: datetime, executor: str, flow_key: str) -> NewJob:
            return attrs.evolve(new_job("a", entity, due, executor=executor), flow_key=flow_key)

        self.add(
            jobs,
            [
                lane_job(1, early, "sms", "acme"),
                lane_job(2, now - timedelta(minutes=1), "sms", "acme"),
                lane_job(3, now - timedelta(minutes=2), "sms", ""),
                lane_job(4, now + timedelta(minutes=5), "sms", "acme"),  # not due yet
                lane_job(5, now - timedelta(minutes=3), "mail", "acme"),
                lane_job(6, now - timedelta(minutes=3), "mail", "other"),
            ],
        )
        self.add(
            jobs, [new_job("b", i, now - timedelta(minutes=i), executor="mail") for i in (4, 6)]
        )
        [claimed] = jobs.claim_due("n1", 1, LONG_LEASE, ["b"])
        assert claimed.entity_id == "6"  # the oldest of its lane: not counted, claimed
        with jobs.engine.connect() as conn:
            at = utc_naive(jobs.db_now(conn))
            every = jobs.count_lanes(conn, at)
            under_key = jobs.count_lanes(conn, at, targets=["key:acme"])
            under_mail = jobs.count_lanes(conn, at, targets=["executor:mail", "key:nobody"])
            under_none = jobs.count_lanes(conn, at, targets=[])
        by = {(c.lane.repository, c.lane.executor, c.lane.flow_key): c for c in every}
        assert {lane: c.due for lane, c in by.items()} == {
            ("a", "sms", "acme"): 2,
            ("a", "sms", ""): 1,
            ("a", "mail", "acme"): 1,
            ("a", "mail", "other"): 1,
            ("b", "mail", ""): 1,
        }
        assert by["a", "sms", "acme"].oldest == utc_naive(early)
        assert by["b", "mail", ""].oldest == utc_naive(now - timedelta(minutes=4))
        assert by["a", "sms", "acme"].lane.targets() == (
            "executor:sms",
            "repository:a",
            "key:acme",
        )
        assert sorted(c.lane.executor for c in under_key) == ["mail", "sms"]
        assert all(c.lane.flow_key == "acme" for c in under_key)
        assert sorted((c.lane.repository, c.lane.flow_key) for c in under_mail) == [
            ("a", "acme"),
            ("a", "other"),
            ("b", ""),
        ]
        assert under_none == []
