"""Executors: what runs a job when it is due.

An executor is registered by a plugin as an `ExecutorSpec`; its factory
builds the callable when a scheduler starts.  The callable receives one
`JobContext` (or, for a `BatchExecutor`, a list of them) carrying the typed
entity, the job key (the idempotency key to pass downstream), the attempt
number and a logger whose lines carry the job key.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

import attrs

from infsched.errors import InfschedError, InvalidArgumentError
from infsched.flow_limits import FlowLimit
from infsched.names import check_name

E_co = TypeVar("E_co", covariant=True)
E_contra = TypeVar("E_contra", contravariant=True)


class PermanentError(InfschedError):
    """Raised by an executor for a failure that retrying cannot fix.

    A rejected phone number or bad credentials: the job is dead-lettered at
    once with this error instead of being retried.
    """


class ThrottledError(InfschedError):
    """Raised (or returned, by a batch executor) when the system called said "too fast".

    A gateway's throttling answer (Kannel's HTTP 503, SMPP's ESME_RTHROTTLED):
    the job waits again without an attempt counted, and the job's limit target
    is held across the cluster for `retry_after` seconds (1 s if None, 300 s at most), so the
    key slows down instead of burning retries (docs/flow-control.md).
    """

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


@attrs.frozen
class JobContext(Generic[E_co]):
    """One job as an executor sees it."""

    entity: E_co
    #: Unique per (repository, entity id, due time); stable across attempts and nodes.
    job_key: str
    #: 1 for the first run, 2 for the first retry, and so on.
    attempt: int
    due_at: datetime
    repository: str
    logger: logging.LoggerAdapter[logging.Logger]


@runtime_checkable
class Executor(Protocol[E_contra]):
    """Runs one job; returns normally on success, raises on failure."""

    def __call__(self, job: JobContext[E_contra], /) -> None: ...


@runtime_checkable
class BatchExecutor(Protocol[E_contra]):
    """Runs many jobs in one call, for transports that can act in bulk.

    Returns one entry per job, in order: None for success, the exception for
    a failure (a `PermanentError` is not retried).
    """

    def execute_batch(
        self, jobs: Sequence[JobContext[E_contra]], /
    ) -> Sequence[BaseException | None]: ...


ExecutorFactory = Callable[[Mapping[str, Any]], "Executor[Any] | BatchExecutor[Any]"]
#: An executor's own limit, from the plugin's config section (None: no limit there).
LimitFactory = Callable[[Mapping[str, Any]], FlowLimit | None]


def _positive_int(inst: object, field: attrs.Attribute[int], value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidArgumentError(
            f"ExecutorSpec.{field.name}: {value!r} must be a whole number >= 1"
        )


def _positive_seconds(inst: object, field: attrs.Attribute[float], value: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise InvalidArgumentError(
            f"ExecutorSpec.{field.name}: {value!r} must be a number of seconds > 0"
        )


@attrs.frozen
class ExecutorSpec:
    """An executor a plugin offers, and how the engine should treat its failures."""

    name: str = attrs.field(validator=lambda _, __, v: check_name(v, "executor name"))
    #: Called with the plugin's config section when a scheduler starts.  What it
    #: returns is closed (its ``close()``, if it has one) when that scheduler stops.
    factory: ExecutorFactory
    #: Runs before a job is dead-lettered (1 = no retry).
    max_attempts: int = attrs.field(default=3, validator=_positive_int)
    #: Seconds a single run may take before it counts as failed.
    timeout: float = attrs.field(default=60.0, validator=_positive_seconds)
    #: Jobs per call for a BatchExecutor.
    batch_size: int = attrs.field(default=100, validator=_positive_int)
    description: str = ""
    #: The executor's flow limit (target ``executor:NAME``): fixed, or read from the
    #: plugin's config section when a node starts (e.g. a gateway account's rate).
    #: ``[[limits]]`` in the configuration and ``infsched limits set`` override it.
    limit: FlowLimit | LimitFactory | None = None

    def limit_for(self, section: Mapping[str, Any]) -> FlowLimit | None:
        """The limit this executor declares, given its plugin's config section."""
        if self.limit is None or isinstance(self.limit, FlowLimit):
            return self.limit
        return self.limit(section)
