"""What the management, dashboard and metrics tests share: known database content, the CLI."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import pytest
import sqlalchemy as sa

from infsched.cli.main import main
from infsched.clock import SystemClock, utc_naive
from infsched.database import database_of
from infsched.engine.history import History, JobOutcome
from infsched.engine.scheduler import history_repository
from infsched.jobstore.base import Outcome, job_key
from infsched.jobstore.sql import SqlJobStore
from infsched.jobstore.tables import jobs
from infsched.schema import leases, nodes


def now() -> datetime:
    return datetime.now(UTC)


class Seed:
    """Writes known rows into a scheduler's database, as running nodes would have."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.database = database_of(engine, SystemClock())
        SqlJobStore(self.database).create_schema()
        self.history = History(history_repository(self.database, 7), "seed-node", self.database)

    def job(
        self,
        entity_id: object,
        *,
        repository: str = "sms",
        executor: str = "sms",
        state: str = "waiting",
        due: datetime | None = None,
        run_at: datetime | None = None,
        attempt: int = 0,
        owner: str | None = None,
        last_error: str | None = None,
        flow_key: str = "",
    ) -> str:
        due = due or now()
        key = job_key(repository, entity_id, due)
        with self.engine.begin() as conn:
            conn.execute(
                jobs.insert().values(
                    job_key=key,
                    repository=repository,
                    executor=executor,
                    entity_id=str(entity_id),
                    due_at=utc_naive(due),
                    run_at=utc_naive(run_at or due),
                    priority=0,
                    state=state,
                    attempt=attempt,
                    owner=owner,
                    lease_until=utc_naive(now() + timedelta(minutes=5)) if owner else None,
                    payload="{}",
                    last_error=last_error,
                    created_at=utc_naive(now()),
                    flow_key=flow_key,
                )
            )
        return key

    def outcome(
        self,
        entity_id: object,
        state: Outcome,
        *,
        repository: str = "sms",
        finished: datetime | None = None,
        lag: float = 0.1,
        attempt: int = 1,
        error: str | None = None,
        key: str | None = None,
    ) -> str:
        finished = finished or now()
        due = finished - timedelta(seconds=lag + 0.05)
        key = key or job_key(repository, entity_id, due)
        started = (
            None if state in (Outcome.MISFIRED, Outcome.CANCELLED) else due + timedelta(seconds=lag)
        )
        self.history.repository.insert(
            JobOutcome(
                finished_at=finished,
                job_key=key,
                repository=repository,
                entity_id=str(entity_id),
                executor=repository,
                state=state,
                attempt=attempt,
                due_at=due,
                started_at=started,
                node="node-a",
                error=error,
            )
        )
        return key

    def node(
        self,
        node_id: str,
        *,
        heartbeat_age: float,
        in_flight: int = 0,
        state: str = "running",
        member: str | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                nodes.insert().values(
                    node_id=node_id,
                    host="host-1",
                    pid=4242,
                    version="0.1.0",
                    started_at=utc_naive(now() - timedelta(hours=1)),
                    heartbeat_at=utc_naive(now() - timedelta(seconds=heartbeat_age)),
                    in_flight=in_flight,
                    state=state,
                    database_member=member,
                )
            )

    def lease(self, name: str, owner: str, state: dict[str, Any]) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                leases.insert().values(
                    name=name,
                    owner=owner,
                    lease_until=utc_naive(now() + timedelta(seconds=10)),
                    state=json.dumps(state),
                    updated_at=utc_naive(now()),
                )
            )

    def url(self) -> str:
        """The database's URL as ``--db`` takes it, password included."""
        return self.engine.url.render_as_string(hide_password=False)

    def states(self) -> dict[str, str]:
        """{job key: state} of the job table."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(jobs.c.job_key, jobs.c.state)).all()
        return dict(rows)


@attrs.frozen
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return json.loads(self.out)


class Cli:
    """Runs ``infsched ARGS`` in-process, in a clean environment and an empty directory."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> Run:
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as done:
            main(list(args))
        captured = self.capsys.readouterr()
        code = done.value.code
        assert isinstance(code, int)
        return Run(code, captured.out, captured.err)


def clean_cli(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, directory: Any
) -> Cli:
    monkeypatch.chdir(directory)
    monkeypatch.setenv("COLUMNS", "200")
    for var in [v for v in os.environ if v.startswith("INFSCHED_")]:
        monkeypatch.delenv(var)
    return Cli(capsys)
