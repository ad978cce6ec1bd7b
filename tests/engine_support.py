"""What the engine tests share: an entity type, a recording executor, and waiting."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime

import attrs
import sqlalchemy as sa

from infsched.clock import Clock, SystemClock
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.entities import column, id_field, sharding_key
from infsched.executors import JobContext, PermanentError
from infsched.metrics.sink import Labels
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository


@attrs.define(kw_only=True)
class Reminder:
    id: int | None = id_field()
    due: datetime = sharding_key()
    text: str = column(length=200)
    priority: int = column(default=0)


@attrs.frozen
class Call:
    job_key: str
    entity_id: int
    attempt: int
    thread: str


class RecordingExecutor:
    """Records every call; can fail, fail permanently, or hang on chosen entity texts."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()
        self.fail_times: dict[str, int] = {}
        self.permanent: set[str] = set()
        self.hang_seconds: dict[str, float] = {}

    def __call__(self, job: JobContext[Reminder]) -> None:
        text = job.entity.text
        with self._lock:
            self.calls.append(
                Call(job.job_key, job.entity.id or 0, job.attempt, threading.current_thread().name)
            )
        if text in self.hang_seconds:
            time.sleep(self.hang_seconds[text])
        if text in self.permanent:
            raise PermanentError(f"{text} is rejected for good")
        if job.attempt <= self.fail_times.get(text, 0):
            raise ConnectionError(f"gateway down for {text} (attempt {job.attempt})")

    def keys(self) -> list[str]:
        with self._lock:
            return [c.job_key for c in self.calls]

    def count(self) -> int:
        with self._lock:
            return len(self.calls)


class RecordingSink:
    """A metrics sink that keeps the counters' totals."""

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    def increment(self, name: str, value: float = 1.0, labels: Labels | None = None) -> None:
        self.counters[name] += int(value)

    def set_gauge(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def observe(self, name: str, value: float, labels: Labels | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def repository_for(
    url: DatabaseUrl,
    name: str = "reminders",
    clock: Clock | None = None,
    *,
    retention_days: int = 3,
    engine: sa.Engine | None = None,
) -> ShardingRepository[Reminder, int]:
    options = RepositoryOptions(
        name=name,
        entity_type=Reminder,
        engine=engine or create_engine(url),
        retention_days=retention_days,
        precreate_days=1,
        clock=clock or SystemClock(),
    )
    if url.scheme.dialect == "mysql":
        return PartitionedRepository(options)
    return MultiTableRepository(options)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what or predicate}")
