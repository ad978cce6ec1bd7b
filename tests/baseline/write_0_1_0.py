"""Fills a database with 0.1.0's own code: run as a script under that release's package.

Usage: python write_0_1_0.py URL. Writes, in each repository (``remm``, a
table per day; on MySQL/MariaDB also ``remp``, partitioned): entities run to
success and dead-lettered by a 0.1.0 node (history, dead jobs), entities
fetched into waiting jobs, jobs claimed by a node that is gone (a short
lease), entities not fetched yet; and a pause, the node's row and its leases.

It imports nothing from this tree's tests (they are written against this
release's API), so its entity and settings repeat theirs on purpose.
"""

# mypy: ignore-errors
# (written against the 0.1.0 API, which this tree's types do not describe)

from __future__ import annotations

import sys
import time
from datetime import UTC, datetime, timedelta

import attrs
import sqlalchemy as sa

from infsched.clock import SystemClock
from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.engine.scheduler import InfiniteScheduler
from infsched.entities import column, id_field, sharding_key
from infsched.executors import PermanentError
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository

#: Per repository: run to success, dead-lettered, waiting jobs, claimed jobs, not fetched.
COUNTS = {"ok": 5, "dead": 2, "wait": 4, "claimed": 2, "later": 3}
#: The lease of the claims a gone node holds: expired by the time the upgraded node runs.
CLAIM_LEASE = 3.0


@attrs.define(kw_only=True)
class Reminder:
    id: int | None = id_field()
    due: datetime = sharding_key()
    text: str = column(length=200)
    priority: int = column(default=0)


def execute(job) -> None:
    if job.entity.text.startswith("dead"):
        raise PermanentError("rejected for good")


def reminders(kind: str, due: datetime) -> list[Reminder]:
    return [Reminder(due=due, text=f"{kind}-{i}") for i in range(COUNTS[kind])]


def count(engine: sa.Engine, sql: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.text(sql)).scalar_one())


def wait_until(done, what: str) -> None:
    deadline = time.monotonic() + 60
    while not done():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.05)


def main(url_text: str) -> None:
    url = DatabaseUrl(url_text)
    engine = create_engine(url)
    backends = [("remm", MultiTableRepository)]
    if url.is_mysql:
        backends.append(("remp", PartitionedRepository))
    repos = [
        backend(
            RepositoryOptions(
                name=name,
                entity_type=Reminder,
                engine=engine,
                retention_days=3,
                precreate_days=1,
                clock=SystemClock(),
            )
        )
        for name, backend in backends
    ]
    config = SchedulerConfig(
        database_url=url,
        node_id="old-node",
        fetch_interval=0.2,
        lookahead_window=1.0,
        heartbeat_interval=0.5,
        job_lease=5.0,
        thread_pool_size=4,
    )
    executors = {name: execute for name, _ in backends}
    past = datetime.now(UTC) - timedelta(minutes=5)
    for repo in repos:
        repo.insert_many([*reminders("ok", past), *reminders("dead", past)])
    node = InfiniteScheduler(repos, config, executors=executors, engine=engine)
    node.start()
    done = len(repos) * (COUNTS["ok"] + COUNTS["dead"])
    dead = len(repos) * COUNTS["dead"]
    wait_until(
        lambda: (
            count(engine, "SELECT COUNT(*) FROM infsched_jobs WHERE state = 'dead'") == dead
            and count(engine, "SELECT COUNT(*) FROM infsched_jobs") == dead
        ),
        "the dead letters",
    )
    wait_until(lambda: _history(engine) >= done, "the history")
    node.controls.pause("elsewhere", by="old-operator")
    node.stop()

    # Jobs that wait, some claimed by a node that is gone, and entities no fetch took yet.
    idle = InfiniteScheduler(repos, config, executors=executors, engine=engine)
    for repo in repos:
        repo.insert_many([*reminders("wait", past), *reminders("claimed", past)])
    for fetcher in idle.fetchers:
        fetcher.run_cycle()
    for repo in repos:
        claimed = idle.store.claim_due("gone-node", COUNTS["claimed"], CLAIM_LEASE, [repo.name])
        assert len(claimed) == COUNTS["claimed"], claimed
    for repo in repos:
        repo.insert_many(reminders("later", past))
    engine.dispose()


def _history(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        names = [n for n in sa.inspect(conn).get_table_names() if n.startswith("infsched_history")]
        return sum(
            int(conn.execute(sa.text(f"SELECT COUNT(*) FROM {n}")).scalar_one()) for n in names
        )


if __name__ == "__main__":
    main(sys.argv[1])
