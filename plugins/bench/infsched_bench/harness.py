"""A cluster of real ``infsched run`` processes on one database.

The database is MySQL/MariaDB or PostgreSQL, or a SQLite file that the nodes
share (then the probe records its calls in a database of their own that takes
concurrent writers, `record_url`).

Used by the cluster tests and by ``infsched bench --stage cluster``.  Each
node is a separate ``infsched run`` process with its own config file (its
node id, the shared database, one repository ``probe`` of `ProbeEntity`
bound to the recording ``probe`` executor), logging JSON lines to a file.
The probe plugin is installed for the nodes as a throwaway distribution on
PYTHONPATH.

Given schedules (``[[schedules]]`` definitions, their executor the probe),
every node declares them in its config; the probe records each of their runs
(`ScheduleCall`).

The harness inserts entities, kills (SIGKILL), stops (SIGTERM) and restarts
nodes, pauses schedules, and reads what happened: the probe's calls, the job
table, the leases, the history, and ``infsched nodes --json``.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import sqlalchemy as sa

from infsched.clock import SystemClock, from_utc_naive
from infsched.cluster.leases import LeaseRow, LeaseStore
from infsched.database import create_engine, open_database
from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect
from infsched.engine.controls import Controls
from infsched.entities import entity_spec
from infsched.jobstore.base import JobState, NewJob, job_key
from infsched.jobstore.sql import SqlJobStore
from infsched.jobstore.tables import jobs
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.day_sharded import DayShardedRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched.schedule_store import ScheduleStore
from infsched.schedules import SCHEDULE_REPOSITORY
from infsched_bench.probe import (
    ENTITY,
    EXECUTOR,
    ProbeEntity,
    calls,
    create_calls_table,
    schedule_runs,
)

REPOSITORY = "probe"
#: A series as the log sink writes it: ``name`` or ``name{k=v,k=v}``.
COUNTER_SERIES = re.compile(r"(?P<name>[a-z_]+)(?:\{(?P<labels>[^}]*)\})?")
INFSCHED = str(Path(sys.executable).with_name("infsched"))
#: Settings for fast tests: heartbeats every half second, leases of a few seconds.
FAST: dict[str, Any] = {
    "fetch_interval": 0.5,
    "lookahead_window": 2.0,
    "heartbeat_interval": 0.5,
    "job_lease": 3.0,
    "batch_size": 200,
    "thread_pool_size": 8,
    "misfire_threshold": 60.0,
}


def install_probe_plugin(site: Path) -> Path:
    """Make `site` (a directory for PYTHONPATH) provide the probe plugin as a distribution."""
    info = site / "infsched_probe-0.1.dist-info"
    info.mkdir(parents=True, exist_ok=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: infsched-probe\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[infsched]\n{EXECUTOR} = infsched_bench.probe\n")
    return site


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} as TOML")


TomlTable = Mapping[str, object]


def toml_text(top: TomlTable, tables: Mapping[str, TomlTable | Sequence[TomlTable]]) -> str:
    """A TOML document: top-level keys, then ``[name]`` tables.

    A name starting ``[]`` is an array of tables: ``[[name]]`` once for one
    table, once per table for a sequence of them.  Keys whose value is None
    are left out (TOML has no null).
    """
    lines = [f"{key} = {_toml_value(value)}" for key, value in top.items()]
    for name, given in tables.items():
        header = f"[[{name[2:]}]]" if name.startswith("[]") else f"[{name}]"
        for table in [given] if isinstance(given, Mapping) else given:
            keys = [f"{k} = {_toml_value(v)}" for k, v in table.items() if v is not None]
            lines += ["", header, *keys]
    return "\n".join(lines) + "\n"


@attrs.frozen
class Call:
    """One call of the probe executor."""

    job_key: str
    entity_id: int
    node: str
    pid: int
    attempt: int
    due: datetime
    at: datetime
    label: str = ""
    #: When the call began and ended, by its node's clock (the machine's).
    started: datetime | None = None
    ended: datetime | None = None

    @property
    def lag(self) -> float:
        return (self.at - self.due).total_seconds()


@attrs.frozen
class ScheduleCall:
    """One call of the probe executor for a schedule's run."""

    job_key: str
    schedule: str
    occurrence: datetime
    node: str
    pid: int
    attempt: int
    due: datetime
    at: datetime

    @property
    def lag(self) -> float:
        return (self.at - self.due).total_seconds()


@attrs.define
class Node:
    """One ``infsched run`` process (one incarnation of a node id)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path
    clock_offset: float = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def running(self) -> bool:
        return self.process.poll() is None

    def records(self) -> list[dict[str, Any]]:
        """The node's JSON log lines (anything else it printed as {"raw": line})."""
        found = []
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                value = json.loads(line)
            except ValueError:
                value = {"raw": line}
            found.append(value if isinstance(value, dict) else {"raw": line})
        return found

    def messages(self, level: str | None = None) -> list[str]:
        return [
            str(r.get("message", r.get("raw", "")))
            for r in self.records()
            if level is None or r.get("level") == level
        ]

    def counter(self, name: str, **labels: str) -> float:
        """Counter `name`'s total in the node's last ``metrics:`` line (the log sink's),
        summed over the series whose labels include `labels`; 0 if it never counted."""
        lines = [m for m in self.messages() if m.startswith("metrics: ")]
        if not lines:
            return 0.0
        total = 0.0
        for part in lines[-1][len("metrics: ") :].split("; "):
            series, _, value = part.rpartition("=")
            found = COUNTER_SERIES.fullmatch(series)
            if found is None or found["name"] != name:
                continue
            have = dict(
                pair.split("=", 1) for pair in (found["labels"] or "").split(",") if "=" in pair
            )
            if all(have.get(k) == v for k, v in labels.items()):
                total += float(value)
        return total


def wait_until(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")


class Cluster:
    """Node processes sharing database `url`, and what they did."""

    def __init__(
        self,
        url: DatabaseUrl,
        workdir: Path,
        *,
        settings: Mapping[str, Any] | None = None,
        sleep: float = 0.0,
        record: bool = True,
        record_url: DatabaseUrl | None = None,
        schedules: Sequence[TomlTable] = (),
        limits: Sequence[TomlTable] = (),
        repository: TomlTable | None = None,
        node_urls: Mapping[str, DatabaseUrl] | None = None,
    ) -> None:
        """`schedules`, `limits`: ``[[schedules]]`` and ``[[limits]]`` every node's config
        declares; `repository`: more keys of the probe repository's table (``flow_key``);
        `node_urls`: a node's own URL of the database (its members in its own order, on
        Galera), where it is not `url`."""
        self.node_urls = dict(node_urls or {})
        self.limits = list(limits)
        self.repository_settings = dict(repository or {})
        self.record_url = record_url or url
        if not registered_dialect(self.record_url.scheme.dialect).concurrent_writers:
            raise ValueError(
                "the probe records its calls in a database several nodes write at once "
                "(MySQL/MariaDB, PostgreSQL): give record_url"
            )
        self.url = url
        self.workdir = workdir
        self.settings = {**FAST, **(settings or {})}
        self.sleep = sleep
        self.record = record
        self.schedules = list(schedules)
        self.site = install_probe_plugin(workdir / "site")
        self.database = open_database(url)
        self.engine = self.database.engine
        self.record_engine = self.engine if record_url is None else create_engine(record_url)
        options = RepositoryOptions(
            name=REPOSITORY,
            entity_type=ProbeEntity,
            engine=self.engine,
            database=self.database,
            retention_days=1,
            precreate_days=1,
            clock=SystemClock(),
        )
        # The backend the nodes' configuration picks by default for the database.
        self.repository: DayShardedRepository[ProbeEntity, int] = (
            PartitionedRepository(options)
            if self.database.dialect.default_repository_backend == PartitionedRepository.backend
            else MultiTableRepository(options)
        )
        self.repository.maintain()
        self.store = SqlJobStore(self.database)
        self.store.create_schema()
        create_calls_table(self.record_engine)
        self.nodes: dict[str, Node] = {}
        #: Every process started, in order (a restarted node id appears again).
        self.started: list[Node] = []
        self._next_id = 1

    # -- nodes --

    def config_path(self, name: str) -> Path:
        return self.workdir / f"{name}.toml"

    def write_config(self, name: str) -> Path:
        members = [
            u.render_as_string(hide_password=False)
            for u in self.node_urls.get(name, self.url).member_urls()
        ]
        url: str | list[str] = members[0] if len(members) == 1 else members
        probe: dict[str, object] = {"node": name, "sleep": self.sleep}
        if self.record:
            probe["record_url"] = self.record_url.sqlalchemy_url.render_as_string(
                hide_password=False
            )
        text = toml_text(
            {"database_url": url, "node_id": name, **self.settings},
            {
                "plugins.probe": probe,
                "plugins.log": {"interval": 5.0},
                "[]repositories": {
                    "name": REPOSITORY,
                    "entity": ENTITY,
                    "executor": EXECUTOR,
                    "retention_days": 1,
                    "precreate_days": 1,
                    **self.repository_settings,
                },
                "[]schedules": self.schedules,
                "[]limits": self.limits,
            },
        )
        path = self.config_path(name)
        path.write_text(text)
        return path

    def environ(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INFSCHED_")}
        env.update(PYTHONPATH=str(self.site), COLUMNS="200")
        return env

    def start(self, name: str, *, clock_offset: float = 0.0, wait: bool = True) -> Node:
        """Start node `name` (again, after a kill or stop); wait until it beats, by default."""
        if name in self.nodes and self.nodes[name].running():
            raise RuntimeError(f"node {name} is running")
        config = self.write_config(name)
        log_path = self.workdir / f"{name}.{len(self.started)}.log"
        args = [INFSCHED, "run", "--config", str(config), "--log-format", "json", "--grace", "20"]
        if clock_offset:
            args.append(f"--clock-offset={clock_offset}")
        with log_path.open("wb") as out:
            process = subprocess.Popen(
                args, stdout=out, stderr=subprocess.STDOUT, env=self.environ(), cwd=self.workdir
            )
        node = Node(name, process, log_path, clock_offset)
        self.nodes[name] = node
        self.started.append(node)
        if wait:
            self.wait_started(node)
        return node

    def wait_started(self, node: Node, timeout: float = 60.0) -> None:
        def beating() -> bool:
            if not node.running():
                raise AssertionError(
                    f"node {node.name} exited with {node.process.returncode}:\n"
                    + node.log.read_text(errors="replace")[-3000:]
                )
            return any("scheduler node" in m and "started" in m for m in node.messages())

        wait_until(beating, timeout, f"node {node.name} to start")

    def kill(self, name: str) -> set[str]:
        """SIGKILL node `name`; returns the job keys it had claimed and not finished."""
        node = self.nodes[name]
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(timeout=30)
        return self.claimed_by(name)

    def freeze(self, name: str) -> None:
        """SIGSTOP node `name`: every thread stands still (a stalled VM, a long pause)."""
        self.nodes[name].process.send_signal(signal.SIGSTOP)

    def thaw(self, name: str) -> None:
        self.nodes[name].process.send_signal(signal.SIGCONT)

    def stop(self, name: str, timeout: float = 60.0) -> int:
        """SIGTERM node `name` and wait for it to exit; returns its exit code."""
        node = self.nodes[name]
        if node.running():
            node.process.send_signal(signal.SIGTERM)
        return node.process.wait(timeout=timeout)

    def stop_all(self, timeout: float = 60.0) -> dict[str, int]:
        """SIGTERM every running node; returns their exit codes."""
        running = {name: node for name, node in self.nodes.items() if node.running()}
        for node in running.values():
            node.process.send_signal(signal.SIGTERM)
        return {name: node.process.wait(timeout=timeout) for name, node in running.items()}

    def close(self) -> None:
        """Kill whatever still runs; release the harness's connections."""
        for node in self.started:
            if node.running():
                node.process.kill()
                node.process.wait(timeout=30)
        self.engine.dispose()
        self.record_engine.dispose()

    def nodes_json(self, name: str | None = None) -> dict[str, dict[str, Any]]:
        """``infsched nodes --json`` run with node `name`'s config (the first node's by default)."""
        config = self.config_path(name or next(iter(self.nodes)))
        result = subprocess.run(
            [INFSCHED, "nodes", "--json", "--config", str(config)],
            capture_output=True,
            text=True,
            env=self.environ(),
            cwd=self.workdir,
            timeout=60,
        )
        if result.returncode != 0:
            raise AssertionError(f"infsched nodes failed: {result.stderr}")
        return {row["node_id"]: row for row in json.loads(result.stdout)}

    # -- entities and jobs --

    def entities(
        self, count: int, first_due: datetime, seconds: float, label: str = ""
    ) -> list[ProbeEntity]:
        """`count` entities due evenly over `seconds` from `first_due` (all at once for 0)."""
        step = timedelta(seconds=seconds / count) if count else timedelta(0)
        return [
            ProbeEntity(id=self._take_id(), due=first_due + step * i, label=label)
            for i in range(count)
        ]

    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id - 1

    def insert(self, entities: Sequence[ProbeEntity]) -> list[ProbeEntity]:
        for i in range(0, len(entities), 1000):
            self.repository.insert_many(entities[i : i + 1000])
        return list(entities)

    def add_jobs(self, entities: Sequence[ProbeEntity]) -> None:
        """Put jobs for `entities` straight into the job table (no entity rows, no fetching)."""
        spec = entity_spec(ProbeEntity)
        for i in range(0, len(entities), 1000):
            batch = [
                NewJob(
                    job_key=job_key(REPOSITORY, e.id, e.due),
                    repository=REPOSITORY,
                    executor=EXECUTOR,
                    entity_id=str(e.id),
                    due_at=e.due,
                    priority=0,
                    payload=json.dumps(spec.to_json(e), separators=(",", ":")),
                )
                for e in entities[i : i + 1000]
            ]
            with self.engine.begin() as conn:
                self.store.add_jobs(conn, batch)

    def db_now(self) -> datetime:
        with self.engine.connect() as conn:
            return self.database.now(conn)

    def calls(self) -> list[Call]:
        """Every probe call, in the order they were made."""
        with self.record_engine.connect() as conn:
            rows = conn.execute(sa.select(calls).order_by(calls.c.at, calls.c.id)).all()
        return [
            Call(
                job_key=r.job_key,
                entity_id=r.entity_id,
                node=r.node,
                pid=r.pid,
                attempt=r.attempt,
                due=from_utc_naive(r.due),
                at=from_utc_naive(r.at),
                label=r.label,
                started=None if r.started is None else from_utc_naive(r.started),
                ended=None if r.ended is None else from_utc_naive(r.ended),
            )
            for r in rows
        ]

    def schedule_calls(self) -> list[ScheduleCall]:
        """Every probe call for a schedule's run, in the order they were made."""
        table = schedule_runs
        with self.record_engine.connect() as conn:
            rows = conn.execute(sa.select(table).order_by(table.c.at, table.c.id)).all()
        return [
            ScheduleCall(
                job_key=r.job_key,
                schedule=r.schedule,
                occurrence=from_utc_naive(r.occurrence),
                node=r.node,
                pid=r.pid,
                attempt=r.attempt,
                due=from_utc_naive(r.due),
                at=from_utc_naive(r.at),
            )
            for r in rows
        ]

    def pause_schedules(self, names: Sequence[str]) -> None:
        """Pause the schedules `names` (as ``infsched schedules pause`` does)."""
        store = ScheduleStore(self.database)
        for name in names:
            store.pause(name)

    def schedule_jobs(self) -> int:
        """Schedules' runs in the job table: not run yet, or running."""
        with self.engine.connect() as conn:
            query = sa.select(sa.func.count()).where(jobs.c.repository == SCHEDULE_REPOSITORY)
            return int(conn.execute(query).scalar_one())

    def called_entities(self) -> int:
        with self.record_engine.connect() as conn:
            query = sa.select(sa.func.count(sa.distinct(calls.c.entity_id)))
            return int(conn.execute(query).scalar_one())

    def claimed_by(self, node: str) -> set[str]:
        with self.engine.connect() as conn:
            query = sa.select(jobs.c.job_key).where(
                jobs.c.owner == node, jobs.c.state == JobState.CLAIMED.value
            )
            return set(conn.execute(query).scalars())

    def hot_jobs(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(sa.func.count()).select_from(jobs)).scalar_one())

    def unscheduled(self) -> int:
        """Entities in the repository that have no job yet."""
        horizon = self.repository.retention_horizon()
        return len(self.repository.find_unscheduled(horizon, horizon + timedelta(days=3), 10**6))

    def lease(self, name: str) -> LeaseRow | None:
        _, rows = LeaseStore(self.database).leases()
        return next((r for r in rows if r.name == name), None)

    def fetch_lease(self) -> LeaseRow | None:
        return self.lease(f"fetch:{REPOSITORY}")

    def fetch_owner(self) -> str | None:
        lease = self.fetch_lease()
        return None if lease is None else lease.owner

    def _history_tables(self) -> str:
        """The history as one FROM item: a partitioned table, or the union of day tables."""
        names = sorted(
            name
            for name in sa.inspect(self.engine).get_table_names()
            if name == "infsched_history" or re.fullmatch(r"infsched_history_\d{8}", name)
        )
        if names == ["infsched_history"] or not names:
            return "infsched_history"
        return "(" + " UNION ALL ".join(f"SELECT * FROM {name}" for name in names) + ") AS h"

    def history(self) -> list[dict[str, Any]]:
        """Every outcome recorded: job key, repository, entity id, state, attempt, node."""
        query = sa.text(
            "SELECT job_key, repository, entity_id, state, attempt, node, started_at "
            f"FROM {self._history_tables()}"
        )
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(query).mappings()]

    def outcomes(self) -> Counter[str]:
        return Counter(str(r["state"]) for r in self.history())

    def history_window(self) -> tuple[int, float]:
        """Outcomes recorded, and seconds from the first start to the last finish."""
        query = sa.text(
            "SELECT COUNT(*), MIN(started_at), MAX(finished_at) "
            f"FROM {self._history_tables()} WHERE started_at IS NOT NULL"
        )
        with self.engine.connect() as conn:
            count, first, last = conn.execute(query).one()
        if not count:
            return 0, 0.0
        return int(count), (last - first).total_seconds()

    def pause_all(self, paused: bool) -> None:
        controls = Controls(self.database)
        if paused:
            controls.pause(None, by="harness")
        else:
            controls.resume(None)

    def due_at(self, seconds: float) -> datetime:
        """The database's time `seconds` from now."""
        return self.db_now() + timedelta(seconds=seconds)


def sleep_until(deadline: float) -> None:
    """Sleep until monotonic time `deadline` (at once if it has passed)."""
    time.sleep(max(0.0, deadline - time.monotonic()))


@attrs.frozen
class KillPlan:
    """Three nodes; node n1 is SIGKILLed twice while entities come due."""

    entities: int
    #: Entities are due evenly over this many seconds.
    seconds: float
    #: Entities due at once just before each kill, so the killed node has work in flight.
    burst: int
    #: Seconds after the first due time at which n1 is killed.
    kills: tuple[float, float]


@attrs.frozen
class FailoverReport:
    """What happened in `kill_and_restart`."""

    entities: list[ProbeEntity]
    calls: list[Call]
    #: The jobs n1 had claimed and not finished at each kill.
    in_flight: list[set[str]]
    #: Who held the fetch lease before the first kill, and once n1 was judged dead.
    fetch_owners: tuple[str | None, str | None]
    #: ``infsched nodes --json`` once n1 was judged dead, and after the clean stop.
    listed_after_kill: dict[str, dict[str, Any]]
    listed_at_end: dict[str, dict[str, Any]]
    exit_codes: dict[str, int]
    outcomes: Counter[str]
    #: Entities left without a job.
    unscheduled: int
    seconds: float

    @property
    def never_ran(self) -> set[int]:
        return {e.id for e in self.entities if e.id is not None} - {c.entity_id for c in self.calls}

    @property
    def ran_twice(self) -> dict[str, list[Call]]:
        return duplicates(self.calls)

    def summary(self) -> dict[str, Any]:
        return {
            "entities": len(self.entities),
            "never_ran": len(self.never_ran),
            "ran_twice": len(self.ran_twice),
            "in_flight_at_kills": [len(s) for s in self.in_flight],
            "ran_twice_not_in_flight": len(set(self.ran_twice) - set().union(*self.in_flight)),
            "unscheduled": self.unscheduled,
            "seconds": round(self.seconds, 1),
        }


def kill_and_restart(cluster: Cluster, plan: KillPlan) -> FailoverReport:
    """Run three nodes; SIGKILL n1, let the others recover, restart it; kill and restart again.

    After the first kill, waits until ``infsched nodes`` judges n1 dead and
    the others have taken its jobs back before restarting it; after the
    second, restarts it at once (it takes its own jobs back).  Waits until
    every entity ran and stops every node.
    """
    lead = 4.0
    began = time.monotonic()
    first = cluster.due_at(lead)
    entities = cluster.entities(plan.entities - 2 * plan.burst, first, plan.seconds)
    for at in plan.kills:
        entities += cluster.entities(plan.burst, first + timedelta(seconds=at - 0.3), 0, "burst")
    cluster.insert(entities)
    for name in ("n1", "n2", "n3"):
        cluster.start(name)
    owner_before = cluster.fetch_owner()
    job_lease = float(cluster.settings["job_lease"])

    sleep_until(began + lead + plan.kills[0])
    in_flight = [cluster.kill("n1")]
    listings: list[dict[str, dict[str, Any]]] = []

    def n1_dead_others_alive() -> bool:
        # A survivor busy taking n1's jobs back on a loaded machine can miss two
        # half-second beats for a moment ("suspected"); what matters is that one
        # listing shows n1 dead and the others beating, and that one comes soon.
        listings.append(cluster.nodes_json("n2"))
        return [listings[-1][n]["liveness"] for n in ("n1", "n2", "n3")] == [
            "dead",
            "alive",
            "alive",
        ]

    wait_until(n1_dead_others_alive, job_lease + 10, "n1 to be judged dead, n2 and n3 alive")
    listed_after_kill = listings[-1]
    owner_after = cluster.fetch_owner()
    wait_until(lambda: not cluster.claimed_by("n1"), job_lease + 10, "n1's jobs to be recovered")
    cluster.start("n1")

    sleep_until(began + lead + plan.kills[1])
    in_flight.append(cluster.kill("n1"))
    cluster.start("n1")

    wait_until(
        lambda: cluster.called_entities() >= len(entities) and cluster.hot_jobs() == 0,
        plan.seconds + 120,
        f"all {len(entities)} entities to run",
    )
    exit_codes = cluster.stop_all()
    return FailoverReport(
        entities=entities,
        calls=cluster.calls(),
        in_flight=in_flight,
        fetch_owners=(owner_before, owner_after),
        listed_after_kill=listed_after_kill,
        listed_at_end=cluster.nodes_json("n1"),
        exit_codes=exit_codes,
        outcomes=cluster.outcomes(),
        unscheduled=cluster.unscheduled(),
        seconds=time.monotonic() - began,
    )


def duplicates(found: Sequence[Call]) -> dict[str, list[Call]]:
    """Calls by job key, for the keys called more than once."""
    by_key: dict[str, list[Call]] = {}
    for call in found:
        by_key.setdefault(call.job_key, []).append(call)
    return {key: group for key, group in by_key.items() if len(group) > 1}


def attempts_in_order(found: Sequence[Call]) -> Iterator[tuple[str, list[int]]]:
    """Each job key's attempt numbers in the order of its calls."""
    by_key: dict[str, list[int]] = {}
    for call in found:
        by_key.setdefault(call.job_key, []).append(call.attempt)
    yield from by_key.items()
