"""Declared schedules: ``[[schedules]]`` in the config, plugins' schedules, put when a node starts;
and the Python API's schedule methods."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

import infsched
from infsched.config import SchedulerConfig, describe, load_config
from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError, InfschedError, ScheduleError
from infsched.executors import ExecutorSpec, JobContext
from infsched.hookspecs import hookimpl
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import PluginRegistry, load_plugins
from infsched.schedule_store import StoredSchedule
from infsched.schedules import CatchUp, Overlap, Schedule
from infsched.schema import schedules as schedules_table

NIGHTLY = """
[[schedules]]
name = "nightly"
executor = "report"
cron = "30 2 * * *"
zone = "Europe/Berlin"
payload = { to = ["ops"] }
catch_up = "fire_all"
catch_up_limit = 3
overlap = "queue"
"""

PING = """
[[schedules]]
name = "ping"
executor = "report"
every = 300
start = "2026-01-01T00:00:00+00:00"
jitter = 5
priority = 2
"""


def config_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(text)
    return path


def nightly(**changes: Any) -> Schedule:
    fields: dict[str, Any] = {
        "name": "nightly",
        "executor": "report",
        "trigger": "30 2 * * *",
        "zone": "Europe/Berlin",
        "payload": {"to": ["ops"]},
        "catch_up": CatchUp.FIRE_ALL,
        "catch_up_limit": 3,
        "overlap": Overlap.QUEUE,
    }
    fields.update(changes)
    return Schedule(**fields)


# -- the config --


def test_schedules_are_read_from_toml(tmp_path: Path) -> None:
    loaded = load_config(config_file(tmp_path, NIGHTLY + PING), env={})
    first, ping = loaded.config.schedules
    assert first == nightly()
    assert ping == Schedule(
        name="ping",
        executor="report",
        trigger=timedelta(minutes=5),
        start=datetime(2026, 1, 1, tzinfo=UTC),
        jitter=timedelta(seconds=5),
        priority=2,
    )
    shown = {key: value for key, value, _source in describe(loaded)}
    assert shown["schedules"] == (
        "nightly (cron '30 2 * * *' Europe/Berlin -> report); ping (every 300 s UTC -> report)"
    )
    assert SchedulerConfig().schedules == ()


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            'cron = "61 2 * * *"',
            "schedule 'bad': cron: '61 2 * * *' is invalid",
        ),
        (
            'cron = "0 2 * * *"\nzone = "Mars/Olympus"',
            "schedule 'bad': zone: 'Mars/Olympus' is no IANA time zone",
        ),
        ("every = 0", "schedule 'bad': every: 0 is invalid; expected more than 0 seconds"),
        (
            'every = 60\nstart = "2026-02-01T00:00:00Z"\nend = "2026-01-01T00:00:00Z"',
            "schedule 'bad': end: 2026-01-01T00:00:00+00:00 is not after start",
        ),
        ('every = 60\nzoen = "UTC"', "schedule 'bad': unknown key 'zoen'; did you mean 'zone'?"),
        ("", "schedule 'bad': cron or every: give exactly one of them"),
        ('every = 60\ncatch_up = "sometimes"', "schedule 'bad': catch_up: 'sometimes' is invalid"),
    ],
)
def test_a_bad_schedule_table_is_one_line_naming_the_schedule_and_key(
    tmp_path: Path, table: str, message: str
) -> None:
    path = config_file(tmp_path, f'[[schedules]]\nname = "bad"\nexecutor = "report"\n{table}\n')
    with pytest.raises(ScheduleError) as raised:
        load_config(path, env={})
    assert str(raised.value).startswith(message)
    assert "\n" not in str(raised.value)


def test_two_schedules_of_one_name_and_the_environment_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ScheduleError, match=r"^schedules: two schedules are named 'nightly'$"):
        load_config(config_file(tmp_path, NIGHTLY + NIGHTLY), env={})
    with pytest.raises(ConfigError, match=r"schedules is set only in the config file"):
        load_config(None, env={"INFSCHED_SCHEDULES": "x"})
    with pytest.raises(ScheduleError, match=r"^schedules\[0\]: 'name' is required"):
        SchedulerConfig(schedules=[{"executor": "report", "every": 5}])


# -- putting them when a node starts --


def run_report(section: object) -> Callable[[JobContext[Any]], None]:
    return lambda job: None


class Reports:
    """A plugin with the executor `report` and, if given, schedules of its own."""

    def __init__(self, *schedules: Schedule) -> None:
        self.declared = list(schedules)

    @hookimpl
    def register_executors(self) -> Iterable[ExecutorSpec]:
        return [ExecutorSpec(name="report", factory=run_report)]

    @hookimpl
    def register_schedules(self) -> Iterable[Schedule]:
        return self.declared


def registry(*schedules: Schedule) -> PluginRegistry:
    found = load_plugins(env={"INFSCHED_LOAD_PLUGINS": "none"})
    info = found.register(Reports(*schedules), "reports")
    assert (info.status, info.error) == ("ok", None)
    return found


@pytest.fixture
def node_for(every_url: DatabaseUrl) -> Iterator[Callable[..., InfiniteScheduler]]:
    """Nodes (not started unless a test does) on one database, disposed afterwards."""
    made: list[InfiniteScheduler] = []

    def make(
        schedules: Iterable[Schedule] = (),
        plugins: PluginRegistry | None = None,
        **kwargs: Any,
    ) -> InfiniteScheduler:
        config = SchedulerConfig(database_url=every_url, schedules=tuple(schedules))
        node = InfiniteScheduler([], config, plugins=plugins or registry(), **kwargs)
        made.append(node)
        return node

    yield make
    for node in made:
        node.stop(0)
        node.engine.dispose()


def rows(node: InfiniteScheduler) -> list[tuple[str, str, str]]:
    """(name, source, definition) of every stored schedule: what a refusal must leave as it was."""
    with node.engine.connect() as conn:
        found = conn.execute(
            sa.select(
                schedules_table.c.name, schedules_table.c.source, schedules_table.c.definition
            ).order_by(schedules_table.c.name)
        ).all()
    return [tuple(row) for row in found]


def test_a_starting_node_puts_the_config_and_plugin_schedules_idempotently(
    node_for: Callable[..., InfiniteScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    hourly = Schedule(name="hourly", executor="report", trigger="0 * * * *")
    node = node_for([nightly()], registry(hourly))
    caplog.set_level(logging.INFO, logger="infsched.schedules")
    node.start()
    node.stop(0)
    assert [(s.name, s.source) for s in node.schedules()] == [
        ("hourly", "plugin reports"),
        ("nightly", "config"),
    ]
    assert node.schedule("nightly").schedule == nightly()
    assert "declared schedules: 2 added, 0 replaced, 0 unchanged" in caplog.messages

    # Another node with the same declarations changes nothing; a changed one replaces.
    caplog.clear()
    again = node_for([nightly()], registry(hourly)).declare_schedules()
    assert again.puts == {"nightly": "unchanged", "hourly": "unchanged"}
    node.pause_schedule("nightly")
    changed = node_for([nightly(trigger="45 2 * * *")], registry(hourly)).declare_schedules()
    assert changed.puts == {"nightly": "replaced", "hourly": "unchanged"}
    stored = node.schedule("nightly")
    assert (stored.schedule.trigger, stored.paused) == (nightly(trigger="45 2 * * *").trigger, True)
    assert caplog.messages[-1] == "declared schedules: 0 added, 1 replaced, 1 unchanged"


def test_a_schedule_no_longer_declared_stays_and_is_named_in_a_warning(
    node_for: Callable[..., InfiniteScheduler], caplog: pytest.LogCaptureFixture
) -> None:
    daily = Schedule(name="daily", executor="report", trigger="0 6 * * *")
    node_for([nightly(), daily]).declare_schedules()
    node_for([], registry()).add_schedule(
        Schedule(name="manual", executor="report", trigger="0 7 * * *")
    )
    with caplog.at_level(logging.WARNING, logger="infsched.schedules"):
        applied = node_for([]).declare_schedules()
    assert applied.undeclared == {"config": ["daily", "nightly"]}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [
        "declared by config before, not now: daily, nightly; "
        "remove with `infsched schedules remove NAME`"
    ]
    assert [s.name for s in node_for([]).schedules()] == ["daily", "manual", "nightly"]


def test_an_unknown_executor_stops_the_start_and_puts_nothing(
    node_for: Callable[..., InfiniteScheduler],
) -> None:
    first = node_for([nightly()])
    first.declare_schedules()
    before = rows(first)
    lost = Schedule(name="lost", executor="nosuch", trigger="0 1 * * *")
    node = node_for([nightly(trigger="0 3 * * *"), lost])
    with pytest.raises(ScheduleError) as raised:
        node.start()
    assert str(raised.value) == (
        "schedule 'lost': executor: no executor named 'nosuch' is registered (known: report)"
    )
    assert rows(first) == before  # nightly was not replaced either
    # An executor passed to the node counts as known.
    passed = node_for([lost], plugins=registry(), executors={"nosuch": lambda job: None})
    assert passed.declare_schedules().puts == {"lost": "added"}


def test_a_name_declared_by_the_config_and_a_plugin_is_refused(
    node_for: Callable[..., InfiniteScheduler],
) -> None:
    node = node_for([nightly()], registry(nightly(trigger="0 4 * * *")))
    with pytest.raises(ScheduleError) as raised:
        node.declare_schedules()
    assert str(raised.value) == (
        "schedule 'nightly' is declared by both config and plugin reports; "
        "rename or drop one of them"
    )
    assert node.schedules() == []


def test_two_nodes_declaring_at_once_both_succeed(
    node_for: Callable[..., InfiniteScheduler],
) -> None:
    declared = [nightly(), *(nightly(name=f"n{i}") for i in range(20))]
    nodes = [node_for(declared) for _ in range(2)]
    for node in nodes:
        node.schedule_admin  # noqa: B018  (made here: its tables exist before the race)
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def declare(node: InfiniteScheduler) -> None:
        barrier.wait()
        try:
            node.declare_schedules()
        except BaseException as exc:  # recorded, so the test fails on it
            errors.append(exc)

    threads = [threading.Thread(target=declare, args=(node,)) for node in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(nodes[0].schedules()) == 21


# -- the Python API --


def test_the_api_adds_lists_pauses_resumes_and_removes(
    node_for: Callable[..., InfiniteScheduler],
) -> None:
    node = node_for()
    assert node.add_schedule(nightly()) == "added"
    assert node.add_schedule(nightly()) == "unchanged"
    assert node.add_schedule(nightly(priority=5)) == "replaced"
    [stored] = node.schedules()
    assert isinstance(stored, StoredSchedule)
    assert (stored.source, stored.schedule.priority, stored.paused) == ("api", 5, False)
    assert node.pause_schedule("nightly") is True
    assert node.pause_schedule("nightly") is False
    assert node.schedule("nightly").paused
    assert node.resume_schedule("nightly") is True
    node.remove_schedule("nightly")
    with pytest.raises(
        ScheduleError, match=r"^no schedule named 'nightly' \(the schedules: none\)$"
    ):
        node.schedule("nightly")
    with pytest.raises(ScheduleError, match=r"^no schedule named 'x' \(the schedules: none\)$"):
        node.remove_schedule("x")


def test_the_api_refuses_bad_schedules_with_one_line_and_stores_nothing(
    node_for: Callable[..., InfiniteScheduler],
) -> None:
    node = node_for()
    node.add_schedule(nightly())
    before = rows(node)
    with pytest.raises(ScheduleError, match=r"^schedule 'x': executor: no executor named 'sms'"):
        node.add_schedule(Schedule(name="x", executor="sms", trigger="0 1 * * *"))
    refusals: list[Callable[[], object]] = [
        lambda: infsched.Schedule(name="x", executor="report", trigger="61 * * * *"),
        lambda: infsched.Schedule(name="x", executor="report", trigger="0 1 * * *", zone="Nowhere"),
        lambda: infsched.Schedule(name="x", executor="report", trigger=timedelta(0)),
        lambda: infsched.Schedule(
            name="x",
            executor="report",
            trigger="0 1 * * *",
            start=datetime(2026, 2, 1, tzinfo=UTC),
            end=datetime(2026, 1, 1, tzinfo=UTC),
        ),
    ]
    for make in refusals:
        with pytest.raises(InfschedError) as raised:
            make()
        assert str(raised.value).startswith("schedule 'x': ")
        assert "\n" not in str(raised.value)
    assert rows(node) == before
