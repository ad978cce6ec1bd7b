"""Entities that have no job yet: found in their repository, run now, or cancelled.

A fetch cycle creates an entity's job within lookahead_window of its due
time; until then the job table knows nothing of the entity, but an operator
may still ask about it, run it now or cancel it.  Both changes go through
the entity's mark (`mark_if_unscheduled`), the one a fetch batch sets: a
guarded UPDATE, so whichever transaction marks the entity first wins. Run
now marks it and adds its job, due now, in that transaction; cancel marks
it and records a ``cancelled`` outcome instead, so no fetcher ever takes it.
The one who finds it marked already is told so, and nothing is done twice.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from infsched.clock import Clock
from infsched.conflict_retries import retrying_conflicts
from infsched.database import same_database
from infsched.engine.binding import RepositoryBinding
from infsched.engine.history import History, JobOutcome
from infsched.jobstore.base import JobStore, Outcome

#: The repositories whose entities can be looked up; called once, when first needed.
Bindings = Callable[[], Sequence[RepositoryBinding]]


@attrs.frozen
class FoundEntity:
    """An entity found by id in a configured repository, with the engine's mark on it."""

    binding: RepositoryBinding
    entity: Any
    #: When its job was created; None while it has none.
    job_at: datetime | None

    @property
    def repository(self) -> str:
        return self.binding.name

    @property
    def entity_id(self) -> str:
        return str(getattr(self.entity, self.binding.spec.id_column.name))

    @property
    def due_at(self) -> datetime:
        due: datetime = getattr(self.entity, self.binding.spec.sharding_column.name)
        return due.astimezone(UTC)

    @property
    def pending(self) -> bool:
        return self.job_at is None


def _typed_id(binding: RepositoryBinding, ref: str) -> object | None:
    """`ref` as the repository's id type, or None if it cannot be one of its ids."""
    id_type = binding.spec.id_column.python_type
    if id_type is str:
        return ref
    try:
        typed: object = id_type(ref)
    except (TypeError, ValueError):
        return None
    return typed


class EntityJobs:
    """Looks entities up in the configured repositories; runs or cancels those without a job."""

    def __init__(
        self, store: JobStore, history: History, bindings: Bindings, clock: Clock, actor: str
    ) -> None:
        self._store = store
        self._history = history
        self._bindings_of = bindings
        self._bindings: dict[str, RepositoryBinding] | None = None
        self._clock = clock
        self._actor = actor

    def configured(self) -> dict[str, RepositoryBinding]:
        if self._bindings is None:
            self._bindings = {b.name: b for b in self._bindings_of()}
        return self._bindings

    def find(self, ref: str, repository: str | None = None) -> list[FoundEntity]:
        """The entity of id `ref` in `repository` (or in every configured one)."""
        found = []
        for name, binding in sorted(self.configured().items()):
            if repository is not None and name != repository:
                continue
            entity_id = _typed_id(binding, ref)
            if entity_id is None:
                continue
            marked = binding.repository.find_with_job_mark(entity_id)
            if marked is not None:
                found.append(FoundEntity(binding, marked.entity, marked.job_at))
        return found

    def run_now(self, found: FoundEntity) -> str | None:
        """Create the job of a pending entity, due now; its key, or None if it has one already.

        The mark and the job commit together (one database), or the job first
        (two databases, as a fetch batch does): a fetcher racing for the
        entity either finds it marked or marked it first, and then this
        returns None.
        """
        job = found.binding.new_job(found.entity)
        repository = found.binding.repository

        def attempt() -> str | None:
            with repository.engine.begin() as conn:
                if not repository.mark_if_unscheduled(conn, self._id(found), self._clock.now()):
                    return None
                if same_database(repository.engine, self._store.engine):
                    self._store.add_jobs_due_now(conn, [job])
                else:
                    with self._store.engine.begin() as store_conn:
                        self._store.add_jobs_due_now(store_conn, [job])
            return job.job_key

        # A fetch batch locks many entity rows and their mark index entries; this one
        # row's UPDATE may meet it in the opposite order and be rolled back.
        return retrying_conflicts(attempt)

    def cancel(self, found: FoundEntity) -> bool:
        """Make sure a pending entity never gets a job; False if it has one already.

        Its mark is set without a job, and a ``cancelled`` outcome (attempt 0)
        is recorded, so `jobs show` says what became of it.
        """
        job = found.binding.new_job(found.entity)
        repository = found.binding.repository
        now = self._clock.now()
        outcome = JobOutcome(
            finished_at=now,
            job_key=job.job_key,
            repository=job.repository,
            entity_id=job.entity_id,
            executor=job.executor,
            state=Outcome.CANCELLED,
            attempt=0,
            due_at=found.due_at,
            started_at=None,
            node=self._actor,
            error=None,
        )
        shared = same_database(repository.engine, self._history.repository.engine)

        def attempt() -> bool:
            with repository.engine.begin() as conn:
                if not repository.mark_if_unscheduled(conn, self._id(found), now):
                    return False
                self._history.repository.insert_many([outcome], conn=conn if shared else None)
            return True

        return retrying_conflicts(attempt)

    @staticmethod
    def _id(found: FoundEntity) -> object:
        return getattr(found.entity, found.binding.spec.id_column.name)
