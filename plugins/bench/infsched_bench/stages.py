"""The benchmark stages; each returns result dicts (one per backend or setting).

insert    raw driver rate vs ShardingRepository.insert_many, both backends
scan      find_all_by_date_range over many rows, resident memory growth
schedule  entities already in a repository moved into the job store
execute   claim, run a no-op executor, record the outcome, leave the hot table
lag       start-minus-due latency at a sustained rate, default fetch settings
memory    resident memory while many entities pass through schedule and execute
cluster   execute throughput of 1, 2… node processes; a node killed twice (cluster.py)
"""

from __future__ import annotations

import statistics
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import SystemClock
from infsched.config import SchedulerConfig
from infsched.database import create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect
from infsched.engine.binding import RepositoryBinding
from infsched.errors import InfschedError, UnsupportedDatabaseError
from infsched.executors import JobContext
from infsched.flow_limits import FlowLimit, Limit, LimitScope, LimitTarget
from infsched.jobstore.tables import jobs
from infsched.management.scheduler import InfiniteScheduler
from infsched.metrics.process_memory import resident_mb
from infsched.plugins import PluginRegistry
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched_bench.cluster import cluster_stage, execute_throughput
from infsched_bench.fixtures import BenchMessage, messages
from infsched_bench.galera import GaleraCluster, StandaloneMariaDB
from infsched_bench.raw_insert import raw_insert_rate
from infsched_bench.workspace import throwaway_database

Result = dict[str, Any]
Progress = Callable[[str], None]

BATCH = 1000
#: Seconds between looks at whether a stage has finished: each look costs the
#: stage measured a connection checkout and a query.
POLL = 0.1


class BenchCheckError(InfschedError, RuntimeError):
    """A stage did not do the work it timed, so its figure would be false."""


def _noop(job: JobContext[BenchMessage]) -> None:
    return None


def _backends(url: DatabaseUrl) -> list[str]:
    """The built-in backends the database can hold: partitions need RANGE partitioning."""
    partitions = registered_dialect(url.scheme.dialect).range_partitioning is not None
    return ["multi_table", "partitioned"] if partitions else ["multi_table"]


def _default_backend(url: DatabaseUrl) -> str:
    return registered_dialect(url.scheme.dialect).default_repository_backend


def _repository(
    plugins: PluginRegistry, backend: str, engine: sa.Engine, name: str = "bench"
) -> ShardingRepository[BenchMessage, int]:
    repo: ShardingRepository[BenchMessage, int] = plugins.repository_backend(backend).factory(
        RepositoryOptions(
            name=name,
            entity_type=BenchMessage,
            engine=engine,
            retention_days=2,
            precreate_days=2,
            clock=SystemClock(),
        )
    )
    repo.maintain()
    return repo


def _chunks(items: Sequence[BenchMessage], size: int = BATCH) -> Iterator[Sequence[BenchMessage]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _today_noon() -> datetime:
    now = datetime.now(UTC)
    return now.replace(hour=12, minute=0, second=0, microsecond=0)


@attrs.frozen
class Bench:
    """One benchmark run against the server `server` names."""

    server: DatabaseUrl
    plugins: PluginRegistry
    rows: int
    progress: Progress = print
    #: The execute stage's limit on its executor (``executor:noop``), if any: a rate
    #: far above what the stage reaches measures what a limit that never binds costs.
    execute_limit: FlowLimit | None = None

    def raw_rate(self, url: DatabaseUrl) -> float:
        sample = list(messages(min(self.rows, 100_000), _today_noon(), timedelta(milliseconds=1)))
        return raw_insert_rate(url, sample, BATCH)

    def raw_around(
        self, url: DatabaseUrl, stage: Callable[[], float]
    ) -> tuple[float, tuple[float, float]]:
        """The stage's rate, and the raw rate measured just before and just after it.

        This machine's speed drifts by a third within minutes (docs/performance.md);
        one raw sample before a stage often measured a different machine than
        the stage ran on.  Bracketing it halves that error, in either direction.
        """
        before = self.raw_rate(url)
        rate = stage()
        after = self.raw_rate(url)
        self.progress(f"raw driver inserts: {before:.0f} rows/s before, {after:.0f} after")
        return rate, (before, after)

    def insert(self) -> list[Result]:
        results = []
        for backend in _backends(self.server):
            with throwaway_database(self.server) as url:
                spread = timedelta(days=1) / self.rows
                entities = list(messages(self.rows, _today_noon(), spread))
                self.progress(f"insert/{backend}: raw driver rate")
                raw = raw_insert_rate(url, entities, BATCH)
                engine = create_engine(url)
                repo = _repository(self.plugins, backend, engine)
                self.progress(f"insert/{backend}: insert_many of {self.rows} rows")
                # Ids from the repository's generator, the high-volume way (docs/repositories.md):
                # ids a caller supplies are first looked up across all days.
                unnamed = [attrs.evolve(e, id=None) for e in entities]
                started = time.perf_counter()
                for chunk in _chunks(unnamed):
                    repo.insert_many(chunk)
                rate = self.rows / (time.perf_counter() - started)
                engine.dispose()
            results.append(
                {
                    "stage": "insert",
                    "backend": backend,
                    "rows": self.rows,
                    "raw_rows_per_s": round(raw),
                    "repo_rows_per_s": round(rate),
                    "ratio": round(rate / raw, 3),
                }
            )
        return results

    def scan(self) -> list[Result]:
        results = []
        for backend in _backends(self.server):
            with throwaway_database(self.server) as url:
                engine = create_engine(url)
                repo = _repository(self.plugins, backend, engine)
                start = _today_noon() - timedelta(hours=6)
                spread = timedelta(hours=12) / self.rows
                self.progress(f"scan/{backend}: inserting {self.rows} rows")
                for chunk in _chunks(list(messages(self.rows, start, spread))):
                    repo.insert_many(chunk)
                before = peak = resident_mb()
                self.progress(f"scan/{backend}: streaming them back")
                count = 0
                started = time.perf_counter()
                for _ in repo.find_all_by_date_range(start, start + timedelta(hours=13)):
                    count += 1
                    if count % 20_000 == 0:
                        peak = max(peak, resident_mb())
                elapsed = time.perf_counter() - started
                peak = max(peak, resident_mb())
                engine.dispose()
            results.append(
                {
                    "stage": "scan",
                    "backend": backend,
                    "rows": count,
                    "rows_per_s": round(count / elapsed),
                    "rss_growth_mb": round(peak - before, 1),
                }
            )
        return results

    def _scheduler(
        self,
        url: DatabaseUrl,
        engine: sa.Engine,
        repo: ShardingRepository[BenchMessage, int],
        **config: Any,
    ) -> InfiniteScheduler:
        settings: dict[str, Any] = {"database_url": url, "node_id": "bench"} | config
        return InfiniteScheduler(
            [RepositoryBinding(repo, executor="noop")],
            SchedulerConfig(**settings),
            executors={"noop": _noop},
            engine=engine,
        )

    def schedule(self) -> list[Result]:
        with throwaway_database(self.server) as url:
            engine = create_engine(url, pool_size=30)
            repo = _repository(self.plugins, _default_backend(url), engine)
            start = datetime.now(UTC) - timedelta(minutes=30)
            self.progress(f"schedule: inserting {self.rows} due entities")
            for chunk in _chunks(
                list(messages(self.rows, start, timedelta(minutes=29) / self.rows))
            ):
                repo.insert_many(chunk)
            scheduler = self._scheduler(url, engine, repo)
            scheduler.store.create_schema()

            def move() -> float:
                self.progress("schedule: moving them into the job store")
                started = time.perf_counter()
                moved = 0
                while (n := scheduler.run_fetch_cycles()) > 0:
                    moved += n
                if moved != self.rows:
                    raise BenchCheckError(f"schedule moved {moved} of {self.rows} entities")
                return moved / (time.perf_counter() - started)

            rate, raw = self.raw_around(url, move)
            engine.dispose()
        return [_rates("schedule", _default_backend(url), self.rows, rate, raw)]

    def execute(self) -> list[Result]:
        with throwaway_database(self.server) as url:
            engine = create_engine(url, pool_size=30)
            repo = _repository(self.plugins, _default_backend(url), engine)
            scheduler = self._scheduler(url, engine, repo)
            scheduler.store.create_schema()
            if self.execute_limit is not None:
                target = LimitTarget(LimitScope.EXECUTOR, "noop")
                scheduler.flow.limits.set(Limit(target, self.execute_limit))
                self.progress(f"execute: {target} limited to {self.execute_limit.describe()}")
            self.progress(f"execute: adding {self.rows} due jobs")
            start = datetime.now(UTC) - timedelta(seconds=30)
            fetcher = scheduler.fetchers[0]
            for chunk in _chunks(
                list(messages(self.rows, start, timedelta(seconds=20) / self.rows))
            ):
                with engine.begin() as conn:
                    scheduler.store.add_jobs(conn, fetcher.new_jobs(chunk))

            def run() -> float:
                self.progress("execute: claiming, running and recording them")
                started = time.perf_counter()
                scheduler.start()
                try:
                    while _any_hot(engine):
                        time.sleep(POLL)
                    return self.rows / (time.perf_counter() - started)
                finally:
                    scheduler.stop(grace=5)

            rate, raw = self.raw_around(url, run)
            engine.dispose()
        result = _rates("execute", _default_backend(url), self.rows, rate, raw)
        if self.execute_limit is not None:
            result["limit"] = self.execute_limit.describe()
        return [result]

    def lag(self, rate: int = 2000, seconds: float = 60.0) -> list[Result]:
        """Entities inserted 40 s ahead at `rate`/s; default fetch settings; lag from history."""
        with throwaway_database(self.server) as url:
            engine = create_engine(url, pool_size=30)
            repo = _repository(self.plugins, _default_backend(url), engine)
            scheduler = self._scheduler(url, engine, repo)
            stop = threading.Event()
            produced = [0]

            def produce() -> None:
                next_id = 1
                began = time.monotonic()
                while not stop.is_set() and time.monotonic() - began < seconds:
                    tick = time.monotonic()
                    due = datetime.now(UTC) + timedelta(seconds=40)
                    batch = list(
                        messages(rate // 10, due, timedelta(seconds=0.1) / (rate // 10), next_id)
                    )
                    repo.insert_many(batch)
                    next_id += len(batch)
                    produced[0] += len(batch)
                    stop.wait(max(0.0, 0.1 - (time.monotonic() - tick)))

            self.progress(f"lag: {rate}/s for {seconds:.0f} s, due 40 s after insert")
            scheduler.start()
            producer = threading.Thread(target=produce)
            producer.start()
            producer.join()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                if _drained(engine, repo):
                    break
                time.sleep(0.5)
            scheduler.stop(grace=5)
            lags = sorted(
                (o.started_at - o.due_at).total_seconds()
                for o in scheduler.history.repository.find_all_by_date_range(
                    datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC) + timedelta(hours=1)
                )
                if o.started_at is not None
            )
            engine.dispose()
        return [
            {
                "stage": "lag",
                "backend": _default_backend(url),
                "rate_per_s": rate,
                "jobs": len(lags),
                "produced": produced[0],
                "lag_p50_s": round(statistics.median(lags), 3) if lags else None,
                "lag_p99_s": round(lags[int(0.99 * (len(lags) - 1))], 3) if lags else None,
                "lag_max_s": round(lags[-1], 3) if lags else None,
            }
        ]

    def memory(self) -> list[Result]:
        """`rows` entities through schedule and execute, with resident memory sampled."""
        with throwaway_database(self.server) as url:
            engine = create_engine(url, pool_size=30)
            repo = _repository(self.plugins, _default_backend(url), engine)
            scheduler = self._scheduler(url, engine, repo, fetch_interval=1, lookahead_window=5)
            scheduler.start()
            self.progress(f"memory: {self.rows} entities through schedule and execute")
            # Measured from after a warm-up, so pools, threads and caches that are
            # made once do not count as growth with volume.
            warmup = min(50_000, self.rows // 10)
            before = peak = resident_mb()
            started = time.perf_counter()
            for first in range(0, self.rows, BATCH):
                due = datetime.now(UTC) - timedelta(seconds=1)
                count = min(BATCH, self.rows - first)
                repo.insert_many(
                    [
                        attrs.evolve(m, id=None)
                        for m in messages(count, due, timedelta(microseconds=10), first + 1)
                    ]
                )
                if first + count == warmup:
                    while not _drained(engine, repo):
                        time.sleep(0.2)
                    before = peak = resident_mb()
                if (first // BATCH) % 20 == 0:
                    peak = max(peak, resident_mb())
                    while _hot_rows(engine) > 20_000:  # keep the input paced to the engine
                        time.sleep(0.2)
                        peak = max(peak, resident_mb())
            while not _drained(engine, repo):
                time.sleep(0.5)
                peak = max(peak, resident_mb())
            elapsed = time.perf_counter() - started
            scheduler.stop(grace=5)
            engine.dispose()
        return [
            {
                "stage": "memory",
                "backend": _default_backend(url),
                "entities": self.rows,
                "seconds": round(elapsed, 1),
                "rss_before_mb": round(before, 1),
                "rss_growth_mb": round(peak - before, 1),
            }
        ]

    def galera(self, rounds: int = 3) -> list[Result]:
        """The execute stage on this server and on a 3-member Galera cluster, in turns.

        The cluster is started here (`infsched_bench.galera`, loopback ports, a
        temporary directory) and stopped at the end.  The node writes through one
        member, as nodes given the members in one order do: every write is still
        certified and applied on all three.  Rounds alternate the two, so the
        machine's drift falls on both.
        """
        results: list[Result] = []
        with GaleraCluster(3) as cluster:
            member = DatabaseUrl(cluster.member("m1").url("mysql"))
            if member.scheme != self.server.scheme:
                raise UnsupportedDatabaseError(
                    f"the galera stage compares a MariaDB server with a Galera cluster of "
                    f"MariaDB members: give --db {member.scheme.example}, not {self.server}"
                )
            self.progress("galera: starting a 3-member cluster on loopback")
            cluster.start()
            members = [DatabaseUrl(m.url("mysql")) for m in cluster.members]
            targets = (("single server", self.server), ("galera 3 members", member))
            nodes_on = (
                ("single server", self.server, ()),
                ("galera, all through m1", member, ()),
                ("galera, each node its own member", member, members),
            )
            for number in range(1, rounds + 1):
                for where, server in targets:
                    self.progress(f"galera: round {number} of {rounds}, execute on {where}")
                    for result in attrs.evolve(self, server=server).execute():
                        results.append(
                            {**result, "stage": "galera", "on": where, "server": server.where}
                        )
                for where, server, spread in nodes_on:
                    self.progress(f"galera: round {number} of {rounds}, 3 nodes on {where}")
                    found = execute_throughput(server, self.rows, 3, self.progress, members=spread)
                    results.append(
                        {**found, "stage": "galera-3-nodes", "on": where, "server": server.where}
                    )
        return results

    def primaries(self, counts: Sequence[int] = (1, 2), rounds: int = 3) -> list[Result]:
        """Independent primaries: one node on each of k servers, all at once, in turns per k.

        Each server is a database of its own with its own job store, sharing
        nothing with the others: this server, and plain servers started here
        (`StandaloneMariaDB`).  On one machine they share its cores, which is
        what this measures besides the sum.
        """
        extra = max(counts) - 1
        servers = [StandaloneMariaDB() for _ in range(extra)]
        results: list[Result] = []
        try:
            for server in servers:
                self.progress("primaries: starting a standalone server on loopback")
                server.start()
            urls = [self.server, *(DatabaseUrl(s.member("primary").url("mysql")) for s in servers)]
            for number in range(1, rounds + 1):
                for count in counts:
                    self.progress(f"primaries: round {number} of {rounds}, {count} at once")
                    found = self._at_once(urls[:count])
                    rates = [r.get("jobs_per_s") or 0 for r in found]
                    results.append(
                        {
                            "stage": "primaries",
                            "primaries": count,
                            "jobs": self.rows * count,
                            "jobs_per_s": sum(rates),
                            "per_primary": rates,
                        }
                    )
        finally:
            for server in servers:
                server.close()
        return results

    def _at_once(self, urls: Sequence[DatabaseUrl]) -> list[Result]:
        """`execute_throughput` with one node on each of `urls`, all at the same time."""
        found: list[Result] = [{} for _ in urls]
        failed: list[BaseException] = []

        def run(index: int, url: DatabaseUrl) -> None:
            try:
                found[index] = execute_throughput(url, self.rows, 1, self.progress)
            except BaseException as exc:  # raised again below, in the caller's thread
                failed.append(exc)

        threads = [threading.Thread(target=run, args=(i, url)) for i, url in enumerate(urls)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if failed:
            raise failed[0]
        return found

    def cluster(self, nodes: Sequence[int] = (1, 2), *, with_failover: bool = True) -> list[Result]:
        """Execute throughput per node count (`rows` jobs each), then the failover run."""
        return cluster_stage(
            self.server, self.rows, nodes, with_failover=with_failover, progress=self.progress
        )


def _rates(stage: str, backend: str, jobs: int, rate: float, raw: tuple[float, float]) -> Result:
    """A stage's result; its ratio is against the mean of the raw rates around it."""
    mean = sum(raw) / len(raw)
    return {
        "stage": stage,
        "backend": backend,
        "jobs": jobs,
        "raw_rows_per_s": round(mean),
        "raw_before_after": [round(r) for r in raw],
        "jobs_per_s": round(rate),
        "ratio": round(rate / mean, 3),
    }


def _hot_rows(engine: sa.Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())


def _any_hot(engine: sa.Engine) -> bool:
    """Whether any job is left in the hot table.

    An EXISTS, not a COUNT: polled twenty times a second, a count over
    100,000 rows took a tenth of the server's time from the stage measured.
    """
    with engine.connect() as conn:
        return conn.execute(sa.select(sa.exists().select_from(jobs))).scalar_one() is True


def _drained(engine: sa.Engine, repo: ShardingRepository[BenchMessage, int]) -> bool:
    """Every entity has a job and every job has finished (cheap: no count over history)."""
    if _any_hot(engine):
        return False
    until = datetime.now(UTC) + timedelta(days=3)
    return not repo.find_unscheduled(repo.retention_horizon(), until, 1)
