"""The dashboard: a frame rendered from a database with known content, and --once."""

from __future__ import annotations

import io
import os
import sys
import termios
import threading
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from attrs import evolve as replace
from rich.console import Console

from infsched.cli.dashboard import Snapshot, live, read_snapshot, render, sparkline
from infsched.dburl import DatabaseUrl
from infsched.engine.controls import Controls
from infsched.errors import NaiveDatetimeError
from infsched.flow_limits import FlowLimit, Limit, LimitTarget
from infsched.jobstore.base import Outcome
from infsched.limit_store import LimitStore
from infsched.management import JobAdmin
from infsched.management.schedule_outcomes import ScheduleOutcomes
from infsched.schedule_store import ScheduleStore
from infsched.schedules import SCHEDULE_REPOSITORY, Schedule
from infsched.schema import limits as limits_table
from tests.engine_support import repository_for
from tests.management_support import Cli, Seed, clean_cli, now


def text_of(snapshot: Snapshot, width: int = 220) -> str:
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(render(snapshot))
    return console.export_text()


def row(text: str, first_cell: str) -> list[str]:
    """The cells of the table line whose first cell is `first_cell`."""
    for line in text.splitlines():
        cells = [c.strip() for c in line.split("│")[1:-1]]
        if cells and cells[0] == first_cell:
            return cells
    raise AssertionError(f"no line starts with {first_cell!r} in:\n{text}")


def seed_cluster(url: DatabaseUrl, seed: Seed) -> dict[str, str]:
    """A cluster in mid-flight: jobs in every state, history, two nodes, a lease, a pause."""
    repo = repository_for(url, engine=seed.engine)
    repo.maintain()
    t = now()
    for i in range(2):
        seed.job(i, repository="reminders", due=t - timedelta(seconds=30))
    for i in range(3):
        seed.job(10 + i, repository="reminders", due=t + timedelta(seconds=10))
    seed.job(20, repository="reminders", due=t + timedelta(hours=2))
    for i in range(4):
        seed.job(30 + i, repository="reminders", state="claimed", owner="node-a", attempt=1)
    keys = {
        "dead": seed.job(
            40, repository="reminders", state="dead", attempt=3, last_error="gateway down"
        ),
        "orders_dead": seed.job(1, repository="orders", state="dead", attempt=1, last_error="bad"),
    }
    for i in range(12):
        seed.outcome(
            100 + i,
            Outcome.SUCCEEDED,
            repository="reminders",
            lag=0.25,
            finished=t - timedelta(seconds=3),
        )
    for i in range(20):
        seed.outcome(
            200 + i,
            Outcome.SUCCEEDED,
            repository="reminders",
            lag=0.05,
            finished=t - timedelta(seconds=115),
        )
    keys["failed"] = seed.outcome(
        300,
        Outcome.FAILED,
        repository="reminders",
        lag=3.0,
        attempt=1,
        error="timeout talking to gateway",
        finished=t - timedelta(seconds=2),
    )
    seed.outcome(
        40,
        Outcome.DEAD,
        repository="reminders",
        lag=3.0,
        attempt=3,
        error="gateway down",
        key=keys["dead"],
        finished=t - timedelta(seconds=30),
    )
    seed.node("node-a", heartbeat_age=1.0, in_flight=4, member="m2 at db2:3306")
    seed.node("node-b", heartbeat_age=90.0, in_flight=0)
    seed.node("node-c", heartbeat_age=12.0, in_flight=0)
    ahead = (t + timedelta(seconds=60)).isoformat()
    seed.lease("fetch:reminders", "node-a", {"due_through": ahead, "moved": 9})
    seed.lease("fetch:orders", "node-b", {"moved": 0})
    Controls(seed.database).pause("orders", by="test")
    return keys


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(every_url))


def test_a_frame_shows_what_the_database_holds(every_url: DatabaseUrl, seed: Seed) -> None:
    keys = seed_cluster(every_url, seed)
    snapshot = read_snapshot(
        JobAdmin(seed.database, seed.history),
        tables=[("reminders", "reminders")],
        lookahead=30,
        window=300,
        bucket_seconds=10,
        heartbeat_interval=5,
        job_lease=30,
        database="test-db",
    )
    text = text_of(snapshot)

    assert "infsched dashboard — test-db —" in text
    reminders = row(text, "reminders")
    # due ≤30s, backlog, in flight, dead, ok/s, fail/s
    assert reminders[1:7] == ["3", "2", "4", "1", "1.2", "0.1"]
    # 20 runs 115 s ago (the top, bucket 11 from the end), 12 in the last 10 s (5/8 of it).
    assert reminders[7] == "█" + " " * 10 + "▅"
    # lag p50 and p99 over the 34 runs of the window: 20 at 50 ms, 12 at 250 ms, 2 at 3 s.
    assert reminders[8:10] == ["50 ms", "3.00 s"]
    ahead, holder = reminders[10].split("s ")
    assert 55 < float(ahead) <= 60.0
    assert holder == "node-a"
    days = [d.strftime("%m-%d") for d in (now() - timedelta(days=3), now() + timedelta(days=1))]
    if every_url.scheme.dialect == "mysql":
        assert reminders[11] == f"5 parts {days[0]}…{days[1]} +max"
    else:
        assert reminders[11] == f"5 tables {days[0]}…{days[1]}"
    orders = row(text, "orders paused")
    assert orders[1:5] == ["0", "0", "0", "1"]
    assert orders[10:12] == ["moved=0", "no tables"]

    # Liveness by the same rule and word as `infsched nodes` (heartbeat 5 s, lease 30 s).
    node_a, node_b, node_c = row(text, "node-a"), row(text, "node-b"), row(text, "node-c")
    assert node_a[1:5] == ["host-1", "4242", "running", "alive"]
    assert node_a[6] == "4"
    # The database member its heartbeat went through; "-" where none is known.
    assert node_a[-1] == "m2 at db2:3306"
    assert node_b[-1] == "-"
    assert node_b[4] == "dead"
    assert node_c[4] == "suspected"

    failures = [line for line in text.splitlines() if "gateway" in line and "│" in line]
    failed_at = next(i for i, line in enumerate(failures) if keys["failed"] in line)
    dead_at = next(i for i, line in enumerate(failures) if "dead" in line and keys["dead"] in line)
    assert failed_at < dead_at  # newest first
    assert "timeout talking to gateway" in failures[failed_at]
    assert "dead letters (2)" in text
    assert row(text, keys["orders_dead"])[1:2] == ["1"]


def test_dashboard_once_prints_one_frame(
    every_url: DatabaseUrl,
    seed: Seed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    keys = seed_cluster(every_url, seed)
    cli: Cli = clean_cli(capsys, monkeypatch, tmp_path)
    url = seed.engine.url.render_as_string(hide_password=False)
    result = cli("dashboard", "--once", "--db", url)
    assert result.code == 0, result.err
    assert row(result.out, "reminders")[1:5] == ["3", "2", "4", "1"]
    assert keys["dead"] in result.out
    assert "node-b" in result.out


EMPTY = Snapshot(
    at=now(),
    database="sqlite:///x.db",
    lookahead=30,
    bucket_seconds=10,
    heartbeat_interval=5,
    job_lease=30,
    paused_all=False,
    repositories=(),
    nodes=(),
    failures=(),
    dead_letters=(),
)


def test_an_empty_cluster_renders_with_placeholders() -> None:
    text = text_of(replace(EMPTY, paused_all=True), width=160)
    assert "ALL REPOSITORIES PAUSED" in text
    assert "(no node has sent a heartbeat)" in text
    assert "dead letters (0)" in text


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([0, 0, 0]) == "   "
    assert sparkline([0, 1, 2, 4, 8]) == " ▁▂▄█"
    assert sparkline([5]) == "█"
    assert sparkline([]) == ""


def test_q_on_the_terminal_leaves_the_live_view_and_restores_the_terminal(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    master, slave = os.openpty()
    terminal = os.fdopen(slave, "r")
    before = termios.tcgetattr(slave)
    monkeypatch.setattr(sys, "stdin", terminal)
    frames: list[int] = []

    def read() -> Snapshot:
        frames.append(1)
        if len(frames) == 3:
            os.write(master, b"xq")  # any other key is ignored
        return replace(EMPTY, at=now())

    screen = Console(file=io.StringIO(), force_terminal=True, width=120)
    done = threading.Event()

    def view() -> None:
        live(read, 0.05, screen)
        done.set()

    viewer = threading.Thread(target=view, daemon=True)
    viewer.start()
    viewer.join(timeout=10)
    try:
        assert done.is_set(), "q did not end the live view"
        assert len(frames) >= 3
        assert termios.tcgetattr(slave) == before  # cbreak mode undone
        assert "infsched dashboard" in screen.file.getvalue()  # type: ignore[attr-defined]
    finally:
        terminal.close()
        os.close(master)


def seed_schedules(seed: Seed) -> datetime:
    """Two schedules and their outcomes: `ping`'s within the window, `nightly`'s days back."""
    store = ScheduleStore(seed.database)
    store.put(
        Schedule(name="nightly", executor="sms", trigger="30 2 * * *", zone="Europe/Berlin"),
        "test",
    )
    store.put(Schedule(name="ping", executor="orders", trigger=timedelta(seconds=60)), "test")
    store.pause("nightly")
    t = now()

    def outcome(name: str, state: Outcome, ago: timedelta) -> None:
        seed.outcome(name, state, repository=SCHEDULE_REPOSITORY, finished=t - ago)

    outcome("nightly", Outcome.SUCCEEDED, timedelta(days=3, hours=1))
    outcome("nightly", Outcome.MISFIRED, timedelta(days=3))  # its newest: beyond the first day
    outcome("ping", Outcome.MISFIRED, timedelta(seconds=400))  # before the window
    outcome("ping", Outcome.SUCCEEDED, timedelta(seconds=200))
    outcome("ping", Outcome.MISFIRED, timedelta(seconds=100))
    outcome("ping", Outcome.MISFIRED, timedelta(seconds=90))
    outcome("ping", Outcome.SKIPPED, timedelta(seconds=30))
    outcome("ping", Outcome.FAILED, timedelta(seconds=10))
    outcome("removed", Outcome.SUCCEEDED, timedelta(seconds=5))  # no schedule by that name
    return t


def near(text: str, expected: datetime) -> bool:
    """Whether the ISO time `text` is `expected`, to the second."""
    return abs(datetime.fromisoformat(text) - expected) < timedelta(seconds=1)


def test_the_schedules_panel_shows_next_fire_last_outcome_and_misfires(
    every_url: DatabaseUrl,
    seed: Seed,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    t = seed_schedules(seed)
    cli: Cli = clean_cli(capsys, monkeypatch, tmp_path)
    result = cli("dashboard", "--once", "--json", "--window", "300", "--db", seed.url())
    assert result.code == 0, result.err
    frame = result.json()
    assert frame["window"] == 300
    nightly, ping = frame["schedules"]
    assert (nightly["name"], nightly["paused"], nightly["trigger"]) == (
        "nightly",
        True,
        "cron '30 2 * * *'",
    )
    fire = datetime.fromisoformat(nightly["next_fire"])
    assert (fire.hour, fire.minute) == (2, 30)
    assert fire.utcoffset() in (timedelta(hours=1), timedelta(hours=2))  # Berlin's zone
    assert nightly["last"]["state"] == "misfired"
    assert near(nightly["last"]["finished_at"], t - timedelta(days=3))
    assert [nightly[k] for k in ("runs", "failed", "misfired", "skipped")] == [0, 0, 0, 0]

    assert (ping["name"], ping["paused"], ping["zone"]) == ("ping", False, "UTC")
    assert t < datetime.fromisoformat(ping["next_fire"]) <= t + timedelta(seconds=61)
    assert ping["last"]["state"] == "failed"
    assert near(ping["last"]["finished_at"], t - timedelta(seconds=10))
    # In the 300 s window: the success and the failure ran; the misfire 400 s ago is not counted.
    assert [ping[k] for k in ("runs", "failed", "misfired", "skipped")] == [2, 1, 2, 1]

    text = cli("dashboard", "--once", "--db", seed.url()).out
    assert "schedules" in text
    assert "over the last 5 min" in text
    nightly_cells = row(text, "nightly paused")
    assert nightly_cells[1] == "cron '30 2 * * *'"
    assert nightly_cells[2].startswith(fire.date().isoformat())
    assert nightly_cells[3] == "misfired"
    ping_cells = row(text, "ping")
    assert ping_cells[3] == "failed"
    assert ping_cells[5:9] == ["2", "1", "2", "1"]


def test_without_schedules_the_dashboard_has_no_schedules_panel(
    every_url: DatabaseUrl, seed: Seed
) -> None:
    seed_cluster(every_url, seed)
    snapshot = read_snapshot(JobAdmin(seed.database, seed.history), tables=[("reminders", "r")])
    assert snapshot.schedules == ()
    assert "schedule" not in text_of(snapshot)


def test_schedule_outcomes_refuse_a_naive_window(seed: Seed) -> None:
    with seed.engine.connect() as conn, pytest.raises(NaiveDatetimeError, match="since"):
        ScheduleOutcomes().activity(conn, ["ping"], datetime(2025, 1, 1), now())


# -- the limits panel --


def seed_limits(seed: Seed) -> datetime:
    """Jobs waiting in three lanes, three limits, a live hold and one that is over."""
    t = now()
    seed.job(1, due=t - timedelta(seconds=40), flow_key="acme")  # lane (sms, sms, acme)
    seed.job(2, due=t - timedelta(seconds=5), flow_key="acme")
    seed.job(3, due=t - timedelta(seconds=20))  # lane (sms, sms, '')
    seed.job(4, due=t + timedelta(minutes=5), flow_key="acme")  # not due yet
    seed.job(5, repository="orders", executor="orders", due=t - timedelta(seconds=90))
    limits = LimitStore(seed.database)
    for raw, limit in [
        ("executor:sms", FlowLimit(rate=2.0)),
        ("key:acme", FlowLimit(max_concurrent=3)),
        ("repository:quiet", FlowLimit(rate=0.5, burst=2, max_concurrent=1)),
    ]:
        limits.set(Limit(LimitTarget.parse(raw), limit))
    limits.hold(["key:acme"], t + timedelta(seconds=30))
    limits.hold(["executor:mail"], t - timedelta(seconds=30))  # over: not shown
    return t


def test_the_limits_panel_shows_held_back_jobs_how_far_behind_and_the_current_rate(
    seed: Seed,
) -> None:
    seed_limits(seed)
    admin = JobAdmin(seed.database, seed.history)
    first = read_snapshot(admin)
    by = {line.target: line for line in first.limits}
    assert list(by) == ["executor:sms", "key:acme", "repository:quiet"]
    sms, acme, quiet = by.values()
    assert (sms.limit, sms.source, sms.held_back, sms.rate, sms.held_until) == (
        "rate 2/s burst 1",
        "operator",
        3,
        None,  # a first frame has no rate yet
        None,
    )
    assert sms.behind is not None
    assert 40 <= sms.behind < 50
    assert (acme.limit, acme.held_back) == ("max_concurrent 3", 2)
    assert acme.held_until is not None
    assert acme.held_until > first.at
    assert (quiet.held_back, quiet.behind) == (0, None)

    with seed.engine.begin() as conn:  # 30 jobs started under executor:sms since
        conn.execute(
            limits_table.update().where(limits_table.c.target == "executor:sms").values(started=30)
        )
    earlier = replace(first, at=first.at - timedelta(seconds=10))
    second = read_snapshot(admin, previous=earlier)
    rates = {line.target: line.rate for line in second.limits}
    sms_rate = rates["executor:sms"]
    assert sms_rate is not None
    assert 2.5 < sms_rate <= 3.0
    assert rates["key:acme"] == 0

    text = text_of(second)
    assert "limits" in text
    sms_cells = row(text, "executor:sms")
    assert sms_cells[1:4] == ["rate 2/s burst 1", "operator", "3"]
    assert sms_cells[4].endswith(" s")
    assert sms_cells[5] == f"{sms_rate:.1f}"
    assert sms_cells[6] == "-"
    acme_cells = row(text, "key:acme")
    assert acme_cells[3] == "2"
    assert acme_cells[6].startswith(second.at.date().isoformat())  # held until
    assert row(text, "repository:quiet")[3:6] == ["0", "-", "0.0"]
    assert "executor:mail" not in text


def test_the_limits_panel_costs_two_queries_and_is_left_out_without_limits(seed: Seed) -> None:
    seed.job(1, due=now() - timedelta(seconds=5))
    admin = JobAdmin(seed.database, seed.history)
    read_snapshot(admin)  # the pool's connection made, the history's tables looked up
    statements: list[str] = []

    def count(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    sa.event.listen(seed.engine, "before_cursor_execute", count)
    try:
        without = read_snapshot(admin)
        queries_without = len(statements)
        LimitStore(seed.database).set(Limit(LimitTarget.parse("executor:sms"), FlowLimit(rate=1)))
        statements.clear()
        with_limits = read_snapshot(admin)
    finally:
        sa.event.remove(seed.engine, "before_cursor_execute", count)
    assert without.limits == ()
    assert "limits" not in text_of(without)
    assert [line.held_back for line in with_limits.limits] == [1]
    # The limits table is read either way; the lanes are counted only under limits.
    assert len(statements) == queries_without + 1
    assert sum("infsched_limits" in s for s in statements) == 1
