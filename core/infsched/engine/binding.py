"""What the engine binds together: a repository to its executor, an executor to its retries.

`RepositoryBinding`: a repository, the executor its entities go to, and their
priority.  `BoundExecutor`: an executor instance with its spec and retry policy,
one job per call or a batch.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from infsched.engine.retry import RetryPolicy
from infsched.entities import EntitySpec, entity_spec
from infsched.errors import ConfigError
from infsched.executors import BatchExecutor, Executor, ExecutorSpec
from infsched.jobstore.base import FLOW_KEY_LENGTH, NewJob, job_key
from infsched.names import check_name
from infsched.repositories.base import SchedulingSource

#: An entity field of this name (an int) sets each job's priority.
PRIORITY_FIELD = "priority"


@attrs.frozen
class RepositoryBinding:
    """Which executor runs a repository's entities, and at what priority.

    A job's priority is the entity's ``priority`` field when it has one,
    else `default_priority`.
    """

    repository: SchedulingSource[Any, Any]
    executor: str = attrs.field(validator=lambda _, __, v: check_name(v, "executor name"))
    default_priority: int = 0
    #: The entity field whose value is each job's flow key (its lane's key for limits
    #: and fair shares, docs/flow-control.md); None: every job's key is ''.
    flow_key: str | None = attrs.field(default=None)

    @flow_key.validator
    def _known_field(self, _field: attrs.Attribute[str | None], value: str | None) -> None:
        if value is None:
            return
        # Text or whole numbers only: those read the same from Python and from SQL.
        names = [c.name for c in self.spec.columns if c.python_type in (str, int)]
        if value not in names:
            raise ConfigError(
                f"repositories.{self.name}.flow_key: {value!r} is no text or integer field of "
                f"{self.spec.cls.__name__} (those are: {', '.join(names)})"
            )

    @property
    def name(self) -> str:
        return self.repository.name

    @property
    def spec(self) -> EntitySpec:
        entity_type: type = self.repository.entity_type
        return entity_spec(entity_type)

    def priority_of(self, entity: object) -> int:
        value = getattr(entity, PRIORITY_FIELD, None)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        return self.default_priority

    def flow_key_of(self, entity: object) -> str:
        """The job's flow key: the flow_key field's value as text ('' for none or None)."""
        if self.flow_key is None:
            return ""
        value = getattr(entity, self.flow_key, None)
        return "" if value is None else str(value)[:FLOW_KEY_LENGTH]

    def new_job(self, entity: object) -> NewJob:
        """The job a fetch cycle creates for `entity`."""
        spec = self.spec
        due = getattr(entity, spec.sharding_column.name)
        entity_id = getattr(entity, spec.id_column.name)
        return NewJob(
            job_key=job_key(self.name, entity_id, due),
            repository=self.name,
            executor=self.executor,
            entity_id=str(entity_id),
            due_at=due,
            priority=self.priority_of(entity),
            payload=json.dumps(spec.to_json(entity), separators=(",", ":")),
            flow_key=self.flow_key_of(entity),
        )


@attrs.frozen
class BoundExecutor:
    """An executor instance with its spec and retry policy: one job per call, or a batch.

    Exactly one of `single` and `batch` is set, decided once by `bind`: isinstance
    against a runtime-checkable Protocol inspects the Protocol's members each time,
    which cost more than a no-op job's whole run.
    """

    spec: ExecutorSpec
    retry: RetryPolicy
    single: Executor[Any] | None = None
    batch: BatchExecutor[Any] | None = None

    def __attrs_post_init__(self) -> None:
        if (self.single is None) == (self.batch is None):
            raise TypeError("a BoundExecutor takes exactly one of single and batch")

    @classmethod
    def bind(
        cls, spec: ExecutorSpec, instance: Executor[Any] | BatchExecutor[Any], retry: RetryPolicy
    ) -> BoundExecutor:
        if isinstance(instance, BatchExecutor):
            return cls(spec, retry, batch=instance)
        return cls(spec, retry, single=instance)

    @property
    def is_batch(self) -> bool:
        return self.batch is not None
