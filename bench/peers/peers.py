"""The peer comparison on one PostgreSQL server: pgqueuer and procrastinate, then ours.

Run by bench/peers/run.sh with the Python of its own venv (the peers installed
from PyPI, never vendored).  For each library, in a fresh database of its own
(dropped afterwards): enqueue `--jobs` jobs in batches, the way the library
does it fastest, then fire them all, due now, with one worker and a no-op task.
Then ``infsched bench --stage insert,schedule,execute`` with the same row
count on the same server.  Every result is one JSON line on stdout, stamped
with the round, the library's version and the machine's load average.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from importlib.metadata import version
from typing import Any
from urllib.parse import urlsplit

import psycopg

#: Jobs per enqueue call: pgqueuer's and procrastinate's batch calls each make one INSERT.
ENQUEUE_BATCH = 1000
#: Jobs per dequeue for pgqueuer (its own default is 10).
PGQUEUER_BATCH = 100


def emit(result: dict[str, Any], round_no: int) -> None:
    result |= {"round": round_no, "load1": round(os.getloadavg()[0], 2)}
    print(json.dumps(result), flush=True)


def note(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", file=sys.stderr, flush=True)


@contextmanager
def fresh_database(server_dsn: str, prefix: str) -> Iterator[str]:
    """A new empty database on the server URL `server_dsn` names; its URL; dropped afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield urlsplit(server_dsn)._replace(path=f"/{name}").geturl()
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


class Calls:
    """The no-op task's calls: how many, and the first and the last one's time."""

    def __init__(self) -> None:
        self.done = 0
        self.first = self.last = 0.0

    def record(self) -> None:
        self.last = time.perf_counter()
        if not self.done:
            self.first = self.last
        self.done += 1

    def rate(self) -> int | None:
        """Calls per second from the first to the last: without start-up and shut-down."""
        window = self.last - self.first
        return round((self.done - 1) / window) if self.done > 1 and window > 0 else None


def count(dsn: str, query: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(query).fetchone()
    return int(row[0]) if row else 0


async def pgqueuer_run(dsn: str, jobs: int) -> list[dict[str, Any]]:
    import asyncpg  # type: ignore[import-untyped]  # asyncpg ships no types
    from pgqueuer import AsyncpgDriver, QueueManager
    from pgqueuer.models import Job
    from pgqueuer.queries import Queries
    from pgqueuer.types import QueueExecutionMode

    connection = await asyncpg.connect(dsn)
    try:
        queries = Queries(AsyncpgDriver(connection))
        await queries.install()
        note(f"pgqueuer: enqueueing {jobs} jobs, {ENQUEUE_BATCH} a call")
        started = time.perf_counter()
        for first in range(0, jobs, ENQUEUE_BATCH):
            n = min(ENQUEUE_BATCH, jobs - first)
            await queries.enqueue(
                ["noop"] * n,
                [json.dumps({"n": first + i}).encode() for i in range(n)],
                [0] * n,
            )
        enqueued = jobs / (time.perf_counter() - started)

        calls = Calls()
        manager = QueueManager(queries)

        @manager.entrypoint("noop")
        async def noop(job: Job) -> None:
            calls.record()

        note(f"pgqueuer: firing them, one worker, batches of {PGQUEUER_BATCH}")
        started = time.perf_counter()
        await manager.run(
            batch_size=PGQUEUER_BATCH,
            mode=QueueExecutionMode.drain,
            dequeue_timeout=timedelta(seconds=1),
        )
        fired = calls.done / (time.perf_counter() - started)
    finally:
        await connection.close()
    left = count(dsn, "SELECT count(*) FROM pgqueuer")
    if calls.done != jobs or left:
        raise SystemExit(f"pgqueuer ran {calls.done} of {jobs} jobs, {left} left in its table")
    common = {"library": "pgqueuer", "version": version("pgqueuer"), "jobs": jobs}
    return [
        {"stage": "peer-enqueue", **common, "batch": ENQUEUE_BATCH, "jobs_per_s": round(enqueued)},
        {
            "stage": "peer-fire",
            **common,
            "batch": PGQUEUER_BATCH,
            "jobs_per_s": round(fired),
            "first_to_last_jobs_per_s": calls.rate(),
        },
    ]


async def procrastinate_run(dsn: str, jobs: int) -> list[dict[str, Any]]:
    import procrastinate
    from procrastinate.types import JSONDict

    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=dsn))
    calls = Calls()

    @app.task(name="noop", queue="bench")
    async def noop(n: int) -> None:
        calls.record()

    async with app.open_async():
        await app.schema_manager.apply_schema_async()
        note(f"procrastinate: enqueueing {jobs} jobs, {ENQUEUE_BATCH} a call")
        started = time.perf_counter()
        for first in range(0, jobs, ENQUEUE_BATCH):
            n = min(ENQUEUE_BATCH, jobs - first)
            batch: list[JSONDict] = [{"n": first + i} for i in range(n)]
            await noop.batch_defer_async(*batch)
        enqueued = jobs / (time.perf_counter() - started)
        note("procrastinate: firing them, one worker (its default concurrency, 1)")
        started = time.perf_counter()
        # wait=False: the worker returns once it has caught up with the queue.
        await app.run_worker_async(queues=["bench"], wait=False, install_signal_handlers=False)
        fired = calls.done / (time.perf_counter() - started)
    left = count(dsn, "SELECT count(*) FROM procrastinate_jobs WHERE status <> 'succeeded'")
    if calls.done != jobs or left:
        raise SystemExit(f"procrastinate ran {calls.done} of {jobs} jobs, {left} not succeeded")
    common = {"library": "procrastinate", "version": version("procrastinate"), "jobs": jobs}
    return [
        {"stage": "peer-enqueue", **common, "batch": ENQUEUE_BATCH, "jobs_per_s": round(enqueued)},
        {
            "stage": "peer-fire",
            **common,
            "concurrency": 1,
            "jobs_per_s": round(fired),
            "first_to_last_jobs_per_s": calls.rate(),
        },
    ]


PEERS = {"pgqueuer": pgqueuer_run, "procrastinate": procrastinate_run}


def infsched_run(infsched: str, url: str, jobs: int, round_no: int) -> None:
    """Our own stages on the same server, their JSON lines passed through with the round."""
    note(f"infsched bench --stage insert,schedule,execute --rows {jobs}")
    out = subprocess.run(
        [
            infsched,
            "bench",
            "--db",
            url,
            "--json",
            "--stage",
            "insert,schedule,execute",
            "--rows",
            str(jobs),
        ],
        check=True,
        stdout=subprocess.PIPE,
        text=True,
    ).stdout
    for line in out.splitlines():
        if line.startswith("{"):
            emit({**json.loads(line), "library": "infsched"}, round_no)


def libpq_dsn(url: str) -> str:
    """postgresql+psycopg://user@host:port/db -> postgresql://user@host:port/db."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme.startswith("postgresql"):
        raise SystemExit(f"{url!r}: expected a PostgreSQL URL, postgresql+psycopg://user@host/db")
    return f"postgresql://{rest}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url", help="the server, as infsched takes it: postgresql+psycopg://…")
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--peers", default="pgqueuer,procrastinate")
    parser.add_argument("--infsched", help="the infsched command; leave out to skip ours")
    args = parser.parse_args()
    server = libpq_dsn(args.url)
    peers = [p.strip() for p in args.peers.split(",") if p.strip()]
    unknown = [p for p in peers if p not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s) {', '.join(unknown)}; choose from {', '.join(PEERS)}")
    for round_no in range(1, args.rounds + 1):
        for peer in peers:
            with fresh_database(server, f"peers_{peer}") as dsn:
                for result in asyncio.run(PEERS[peer](dsn, args.jobs)):
                    emit(result, round_no)
        if args.infsched:
            infsched_run(args.infsched, args.url, args.jobs, round_no)


if __name__ == "__main__":
    main()
