"""RepositoryBinding: a repository, the executor its entities go to, and their priority."""

from __future__ import annotations

import json
from typing import Any

import attrs

from infsched.entities import EntitySpec, entity_spec
from infsched.jobstore.base import NewJob, job_key
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
        )
