"""``infsched dashboard``: a live view of a running cluster, from its database.

Reading and drawing are apart: `read_snapshot` takes everything a frame
shows from the database in a few queries (and writes nothing), and `render`
turns a `Snapshot` into rich renderables and nothing else, so a frame is a
pure function of what the database held (``--once`` prints one).  The live
view redraws in place once a second on the terminal's alternate screen; `q`
or Ctrl-C leaves it and gives the terminal back as it was.
"""

from __future__ import annotations

import contextlib
import os
import select
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime, timedelta, tzinfo
from typing import Any

import attrs
import click
import sqlalchemy as sa
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from infsched.cli.admin import LIVENESS_STYLE, open_admin, seconds, when
from infsched.cli.context import config_options
from infsched.cli.output import json_option, print_json, stdout
from infsched.clock import utc_naive
from infsched.cluster.nodes import NodeState, judge
from infsched.cluster.rows import read_leases, read_nodes
from infsched.engine.controls import ALL
from infsched.jobstore.base import JobState, JobStore, Outcome
from infsched.limit_store import LimitStore
from infsched.management import JobAdmin, JobRow, NodeRow
from infsched.management.history import quantile
from infsched.management.schedule_outcomes import LastOutcome, ScheduleOutcomes
from infsched.management.shards import read_shards
from infsched.schedule_store import ScheduleStore
from infsched.schema import pauses
from infsched.triggers import zone_named

#: Sparkline levels, lowest first; a bucket with nothing in it is a blank.
BARS = "▁▂▃▄▅▆▇█"
#: Failures and dead letters listed, at most.
LISTED = 8


@attrs.frozen
class RepositoryView:
    name: str
    paused: bool
    #: Waiting jobs due within the lookahead window (not yet due).
    due_soon: int
    #: Waiting jobs whose run time has passed: due, not started.
    backlog: int
    #: Claimed jobs: queued on a node or running.
    in_flight: int
    dead: int
    #: Outcomes per bucket, oldest first, over the sparkline window.
    executed: tuple[int, ...]
    failed: tuple[int, ...]
    lag_p50: float | None
    lag_p99: float | None
    watermark: str
    shards: str


@attrs.frozen
class FailureView:
    finished_at: datetime
    repository: str
    job_key: str
    state: str
    attempt: int
    error: str


@attrs.frozen
class ScheduleLine:
    """One schedule as the dashboard shows it; its counts are over the dashboard's window."""

    name: str
    trigger: str
    zone: str
    paused: bool
    #: In the schedule's zone; None: it fires no more.
    next_fire: datetime | None
    last: LastOutcome | None
    runs: int
    failed: int
    misfired: int
    skipped: int


@attrs.frozen
class LimitLine:
    """One limited (or held) target as the dashboard shows it."""

    target: str
    #: The limit's description (`FlowLimit.describe`).
    limit: str
    source: str
    #: Jobs due now and waiting in lanes under the target.
    held_back: int
    #: Seconds the oldest of them is past its run time (None: none is waiting).
    behind: float | None
    #: Jobs claimed under the target since its row was made (the limits table's counter).
    started: int
    #: Starts per second between the previous frame and this one (None: no previous frame).
    rate: float | None
    #: A throttled gateway holds the target until then (None: not held now).
    held_until: datetime | None


@attrs.frozen
class Snapshot:
    """Everything one frame shows, as the database held it at `at` (its own clock)."""

    at: datetime
    database: str
    lookahead: float
    bucket_seconds: float
    #: The config's heartbeat_interval and job_lease: a node's liveness is judged by
    #: them, by the same rule (`judge`) as `infsched nodes`.
    heartbeat_interval: float
    job_lease: float
    paused_all: bool
    repositories: tuple[RepositoryView, ...]
    nodes: tuple[NodeRow, ...]
    failures: tuple[FailureView, ...]
    dead_letters: tuple[JobRow, ...]
    #: Seconds the schedules' counts cover (the sparklines' window).
    window: float = 0.0
    schedules: tuple[ScheduleLine, ...] = ()
    limits: tuple[LimitLine, ...] = ()


# -- reading --


def _job_counts(
    store: JobStore, conn: sa.Connection, now: datetime, lookahead: float
) -> dict[str, dict[str, int]]:
    """{repository: {"due_soon", "backlog", "in_flight", "dead"}} from the job store."""
    found: dict[str, dict[str, int]] = {}
    for c in store.count_jobs(conn, now, horizon=now + timedelta(seconds=lookahead)):
        counts = found.setdefault(c.repository, dict.fromkeys(_COUNTS, 0))
        if c.state == JobState.WAITING.value:
            counts["backlog"] = c.due
            counts["due_soon"] = c.before_horizon - c.due
        elif c.state == JobState.CLAIMED.value:
            counts["in_flight"] = c.total
        elif c.state == JobState.DEAD.value:
            counts["dead"] = c.total
    return found


_COUNTS = ("due_soon", "backlog", "in_flight", "dead")
_FAILED = (Outcome.FAILED.value, Outcome.DEAD.value)


def read_snapshot(
    admin: JobAdmin,
    *,
    tables: Sequence[tuple[str, str]] = (),
    lookahead: float = 30.0,
    window: float = 300.0,
    bucket_seconds: float = 10.0,
    heartbeat_interval: float = 5.0,
    job_lease: float = 30.0,
    database: str = "",
    previous: Snapshot | None = None,
) -> Snapshot:
    """Read one frame's worth from `admin`'s database; writes nothing.

    `tables` are (repository, table name or prefix) pairs of the configured
    repositories; repositories found only in the job table or the history
    are shown too, their table taken to be named after them.  The limits'
    current rates are their starts since `previous`, the frame before.
    """
    buckets = max(1, round(window / bucket_seconds))
    with admin.engine.connect() as conn:
        at = admin.store.db_now(conn)
        now = utc_naive(at)
        since = now - timedelta(seconds=buckets * bucket_seconds)
        counts = _job_counts(admin.store, conn, now, lookahead)
        finishes = admin.reader.finishes(conn, since, now)
        lags = admin.reader.lags(conn, since, now)
        latest = admin.reader.latest(conn, _FAILED, now - timedelta(hours=1), now, LISTED)
        paused = frozenset(conn.execute(sa.select(pauses.c.scope)).scalars())
        node_rows = read_nodes(conn, at)
        lease_rows = read_leases(conn)
        table_of = dict(tables)
        names = sorted(set(table_of) | set(counts) | {r for r, _, _ in finishes} | (paused - {ALL}))
        for name in names:
            table_of.setdefault(name, name)
        shards = read_shards(
            conn,
            admin.database.dialect,
            list(table_of.values()),
            sa.inspect(conn).get_table_names(),
        )
        schedules = _schedule_lines(admin, conn, at, buckets * bucket_seconds)
        limit_lines = _limit_lines(admin, conn, at, previous)
    dead = admin.list_jobs(state=JobState.DEAD.value, limit=LISTED)
    series: dict[str, tuple[list[int], list[int]]] = {
        n: ([0] * buckets, [0] * buckets) for n in names
    }
    for repository, state, finished in finishes:
        age = (now - finished).total_seconds()
        index = buckets - 1 - min(int(age // bucket_seconds), buckets - 1)
        ok, failed = series[repository]
        if state == Outcome.SUCCEEDED.value:
            ok[index] += 1
        elif state in _FAILED:
            failed[index] += 1
    views = []
    for name in names:
        c = counts.get(name, dict.fromkeys(_COUNTS, 0))
        lag = lags.get(name, [])
        lease = next((x for x in lease_rows if x.fetches(name)), None)
        views.append(
            RepositoryView(
                name=name,
                paused=name in paused,
                due_soon=c["due_soon"],
                backlog=c["backlog"],
                in_flight=c["in_flight"],
                dead=c["dead"],
                executed=tuple(series[name][0]),
                failed=tuple(series[name][1]),
                lag_p50=quantile(lag, 0.5) if lag else None,
                lag_p99=quantile(lag, 0.99) if lag else None,
                watermark=lease.watermark(at) if lease is not None else "-",
                shards=shards[table_of[name]].describe(),
            )
        )
    return Snapshot(
        at=at,
        database=database,
        lookahead=lookahead,
        bucket_seconds=bucket_seconds,
        heartbeat_interval=heartbeat_interval,
        job_lease=job_lease,
        paused_all=ALL in paused,
        repositories=tuple(views),
        nodes=tuple(node_rows),
        failures=tuple(
            FailureView(
                finished_at=r["finished_at"],
                repository=r["repository"],
                job_key=r["job_key"],
                state=r["state"],
                attempt=int(r["attempt"]),
                error=r["error"] or "",
            )
            for r in latest
        ),
        dead_letters=tuple(dead),
        window=buckets * bucket_seconds,
        schedules=schedules,
        limits=limit_lines,
    )


def _limit_lines(
    admin: JobAdmin, conn: sa.Connection, at: datetime, previous: Snapshot | None
) -> tuple[LimitLine, ...]:
    """Each target with a limit or a hold now: one query for the limits, one for the lanes."""
    stored = [
        s
        for s in LimitStore(admin.database).all(conn)
        if s.limit.rate is not None
        or s.limit.max_concurrent is not None
        or (s.held_until is not None and s.held_until > at)
    ]
    if not stored:
        return ()
    now = utc_naive(at)
    waiting: dict[str, tuple[int, datetime | None]] = {s.target.id: (0, None) for s in stored}
    for lane in admin.store.count_lanes(conn, now, targets=list(waiting)):
        for target in lane.lane.targets():
            if target in waiting:
                due, oldest = waiting[target]
                waiting[target] = (due + lane.due, min(oldest or lane.oldest, lane.oldest))
    before = {line.target: line for line in previous.limits} if previous is not None else {}
    elapsed = (at - previous.at).total_seconds() if previous is not None else 0.0
    lines = []
    for s in stored:
        due, oldest = waiting[s.target.id]
        earlier = before.get(s.target.id)
        rate = None
        # A counter that went back is a row made anew (removed, set again): no rate yet.
        if earlier is not None and elapsed > 0 and s.started >= earlier.started:
            rate = (s.started - earlier.started) / elapsed
        lines.append(
            LimitLine(
                target=s.target.id,
                limit=s.limit.describe(),
                source=s.source,
                held_back=due,
                behind=None if oldest is None else max(0.0, (now - oldest).total_seconds()),
                started=s.started,
                rate=rate,
                held_until=s.held_until if s.held_until is not None and s.held_until > at else None,
            )
        )
    return tuple(lines)


def _schedule_lines(
    admin: JobAdmin, conn: sa.Connection, at: datetime, window: float
) -> tuple[ScheduleLine, ...]:
    """Every schedule, with its next fire time and its outcomes over the last `window` seconds."""
    stored = ScheduleStore(admin.database).list(conn)
    if not stored:
        return ()
    activity = ScheduleOutcomes(admin.reader).activity(
        conn, [s.name for s in stored], at - timedelta(seconds=window), at
    )
    lines = []
    for s in stored:
        upcoming = s.schedule.next_fire_times(at, 1)
        done = activity[s.name]
        lines.append(
            ScheduleLine(
                name=s.name,
                trigger=s.schedule.describe_trigger(),
                zone=s.schedule.zone,
                paused=s.paused,
                next_fire=upcoming[0] if upcoming else None,
                last=done.last,
                runs=done.runs,
                failed=done.failed,
                misfired=done.misfired,
                skipped=done.skipped,
            )
        )
    return tuple(lines)


# -- drawing --


def sparkline(values: Sequence[int]) -> str:
    """One character per value, scaled to the largest; zero is a blank."""
    top = max(values, default=0)
    if top <= 0:
        return " " * len(values)
    return "".join(
        " " if v <= 0 else BARS[min(len(BARS) - 1, (v * len(BARS) - 1) // top)] for v in values
    )


def _rate(values: Sequence[int], bucket_seconds: float) -> str:
    """Per second over the last bucket."""
    per_second = (values[-1] if values else 0) / bucket_seconds
    return f"{per_second:.1f}"


def _repositories(s: Snapshot) -> Table:
    minutes = len(s.repositories[0].executed) * s.bucket_seconds / 60 if s.repositories else 0
    table = Table(
        title="repositories",
        title_justify="left",
        caption=f"rates over the last {s.bucket_seconds:g} s; executed: per {s.bucket_seconds:g} s "
        f"over the last {minutes:g} min; lag: start minus due time; fetched ahead: how far past "
        "now the fetcher has moved due entities into the job store, and which node fetches",
        caption_justify="left",
        expand=False,
    )
    table.add_column("repository", overflow="fold")
    for heading in (f"due ≤{s.lookahead:g}s", "backlog", "in flight", "dead", "ok/s", "fail/s"):
        table.add_column(heading, justify="right")
    table.add_column("executed", no_wrap=True)
    table.add_column("lag p50", justify="right")
    table.add_column("lag p99", justify="right")
    table.add_column("fetched ahead")
    table.add_column("days")
    for r in s.repositories:
        name = Text(r.name)
        if r.paused or s.paused_all:
            name.append(" paused", style="bold yellow")
        table.add_row(
            name,
            f"{r.due_soon:,}",
            Text(f"{r.backlog:,}", style="red" if r.backlog else ""),
            f"{r.in_flight:,}",
            Text(f"{r.dead:,}", style="red" if r.dead else ""),
            _rate(r.executed, s.bucket_seconds),
            _rate(r.failed, s.bucket_seconds),
            Text(sparkline(r.executed), style="green"),
            seconds(r.lag_p50),
            seconds(r.lag_p99),
            Text(r.watermark),
            Text(r.shards),
        )
    if not s.repositories:
        table.add_row("(no repositories: no jobs, history or configured repositories)")
    return table


def _table(title: str, headings: Sequence[str], right: Sequence[str] = ()) -> Table:
    table = Table(title=title, title_justify="left")
    for heading in headings:
        table.add_column(heading, justify="right" if heading in right else "left", overflow="fold")
    return table


def _nodes(s: Snapshot) -> Table:
    table = _table(
        "nodes",
        (
            "node",
            "host",
            "pid",
            "state",
            "liveness",
            "heartbeat age",
            "in flight",
            "started",
            "database member",
        ),
        right=("pid", "in flight"),
    )
    for n in s.nodes:
        liveness = judge(n.state, n.heartbeat_age, s.heartbeat_interval, s.job_lease)
        style = LIVENESS_STYLE[liveness]
        table.add_row(
            Text(n.node_id),
            Text(n.host),
            str(n.pid),
            n.state,
            Text(liveness.value, style),
            Text(seconds(n.heartbeat_age), style if liveness is not NodeState.STOPPED else ""),
            str(n.in_flight),
            when(n.started_at),
            Text(n.database_member or "-"),
        )
    if not s.nodes:
        table.add_row("(no node has sent a heartbeat)")
    return table


def _failures(s: Snapshot) -> Table:
    table = _table(
        "recent failures (last hour)", ("finished", "job key", "outcome", "attempt", "error")
    )
    for f in s.failures:
        table.add_row(
            when(f.finished_at),
            Text(f.job_key),
            Text(f.state, "red" if f.state == Outcome.DEAD.value else "yellow"),
            str(f.attempt),
            Text(f.error),
        )
    if not s.failures:
        table.add_row("(none)")
    return table


def _dead_letters(s: Snapshot) -> Table:
    total = sum(r.dead for r in s.repositories)
    table = _table(f"dead letters ({total:,})", ("job key", "attempts", "due", "last error"))
    table.caption = "infsched jobs retry KEY | jobs cancel KEY"
    table.caption_justify = "left"
    for d in s.dead_letters:
        table.add_row(Text(d.job_key), str(d.attempt), when(d.due_at), Text(d.last_error or ""))
    if not s.dead_letters:
        table.add_row("(none)")
    return table


def _schedules(s: Snapshot) -> Table:
    table = _table(
        "schedules",
        (
            "schedule",
            "trigger",
            "next fire",
            "last outcome",
            "last finished",
            "runs",
            "failed",
            "misfired",
            "skipped",
        ),
        right=("runs", "failed", "misfired", "skipped"),
    )
    table.caption = (
        f"runs, failed, misfired, skipped: over the last {s.window / 60:g} min; "
        "times in the schedule's zone; infsched schedules show NAME"
    )
    table.caption_justify = "left"
    for line in s.schedules:
        name = Text(line.name)
        if line.paused:
            name.append(" paused", style="bold yellow")
        zone = zone_named(line.zone)
        last = line.last
        table.add_row(
            name,
            Text(line.trigger),
            _in_zone(line.next_fire, zone),
            Text("-")
            if last is None
            else Text(last.state, "green" if last.state == Outcome.SUCCEEDED.value else "yellow"),
            _in_zone(None if last is None else last.finished_at, zone),
            str(line.runs),
            Text(str(line.failed), style="red" if line.failed else ""),
            Text(str(line.misfired), style="yellow" if line.misfired else ""),
            Text(str(line.skipped), style="yellow" if line.skipped else ""),
        )
    return table


def _limits(s: Snapshot) -> Table:
    table = _table(
        "limits",
        ("target", "limit", "source", "held back", "behind", "starts/s", "held until"),
        right=("held back", "behind", "starts/s"),
    )
    table.caption = (
        "held back: jobs due and waiting under the target; behind: how late the oldest of "
        "them is; starts/s: since the previous refresh; infsched limits show"
    )
    table.caption_justify = "left"
    for line in s.limits:
        held = line.held_until is not None
        table.add_row(
            Text(line.target),
            Text(line.limit),
            Text(line.source),
            Text(f"{line.held_back:,}", style="yellow" if line.held_back else ""),
            seconds(line.behind),
            "-" if line.rate is None else f"{line.rate:.1f}",
            Text(when(line.held_until), style="bold yellow") if held else Text("-"),
        )
    return table


def _in_zone(value: datetime | None, zone: tzinfo) -> str:
    return "-" if value is None else value.astimezone(zone).isoformat(sep=" ", timespec="seconds")


def snapshot_json(s: Snapshot) -> dict[str, Any]:
    """A frame as JSON (``--once --json``): the snapshot, each node with its liveness."""
    values = attrs.asdict(s)
    values["nodes"] = [
        {
            **attrs.asdict(n),
            "liveness": judge(n.state, n.heartbeat_age, s.heartbeat_interval, s.job_lease).value,
        }
        for n in s.nodes
    ]
    return values


def render(s: Snapshot) -> RenderableType:
    """One frame: a pure function of the snapshot."""
    paused = " — [bold yellow]ALL REPOSITORIES PAUSED[/]" if s.paused_all else ""
    header = (
        f"[bold]infsched dashboard[/] — {escape(s.database)} — {when(s.at)}{paused}"
        "  [dim](q or Ctrl-C to leave)[/]"
    )
    panels = [_repositories(s), _nodes(s), _failures(s), _dead_letters(s)]
    if s.limits:
        panels.insert(1, _limits(s))
    if s.schedules:
        panels.insert(1, _schedules(s))
    return Group(header, *panels)


# -- the live view --


@contextlib.contextmanager
def quit_on_q(stop: threading.Event) -> Iterator[None]:
    """While inside, a `q` typed on the terminal sets `stop` (stdin a TTY only).

    The terminal is put in cbreak mode (keys arrive unbuffered, Ctrl-C still
    interrupts) and read without blocking by a thread; its settings are
    restored on the way out, however the block ends.
    """
    if not sys.stdin.isatty():
        yield
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            ready, _, _ = select.select([fd], [], [], 0.1)
            if ready and os.read(fd, 1) in (b"q", b"Q"):
                stop.set()
                return

    tty.setcbreak(fd)
    thread = threading.Thread(target=watch, name="infsched-dashboard-keys", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1)
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _frame(read: Callable[[], Snapshot]) -> RenderableType:
    try:
        return render(read())
    except sa.exc.DBAPIError as exc:
        reason = str(exc.orig or exc).splitlines()[0]
        # Not expanded: off a terminal the console's width is unlimited.
        return Panel(
            f"database error, trying again every second: {escape(reason)}",
            style="red",
            expand=False,
        )


def live(read: Callable[[], Snapshot], interval: float, console: Console) -> None:
    """Redraw every `interval` seconds until `q` or Ctrl-C."""
    stop = threading.Event()
    # Ctrl-C is caught outermost: the screen and the terminal's settings are restored first.
    with (
        contextlib.suppress(KeyboardInterrupt),
        quit_on_q(stop),
        Live(_frame(read), console=console, screen=True, auto_refresh=False) as view,
    ):
        while not stop.wait(interval):
            view.update(_frame(read), refresh=True)


def stream(read: Callable[[], Snapshot], interval: float, console: Console) -> None:
    """Off a terminal (a pipe, a file): a frame every `interval` seconds until Ctrl-C.

    Each frame is printed after the last as lines of its own, with a blank line
    between, since a file cannot be redrawn in place.
    """
    with contextlib.suppress(KeyboardInterrupt):
        while True:
            console.print(_frame(read))
            console.line()
            console.file.flush()
            time.sleep(interval)


@click.command("dashboard")
@config_options
@click.option("--once", is_flag=True, help="Print one frame and exit.")
@json_option
@click.option(
    "--interval",
    type=click.FloatRange(min=0.2),
    default=1.0,
    show_default=True,
    help="Seconds between refreshes.",
)
@click.option(
    "--window",
    type=click.FloatRange(min=10),
    default=300.0,
    show_default=True,
    help="Seconds of history the sparklines and lag quantiles cover.",
)
def dashboard(once: bool, interval: float, window: float, as_json: bool) -> None:
    """A live view of this database's cluster: repositories, schedules, limits, nodes, failures.

    Works from any terminal against the database of a running cluster; it
    only reads.  `q` or Ctrl-C leaves.  Off a terminal it prints a frame per
    interval, one after the other.  ``--once --json`` prints one frame as JSON.
    """
    if as_json and not once:
        raise click.UsageError("--json prints one frame: give --once too")
    with open_admin() as (admin, config):
        options: dict[str, Any] = {
            "tables": [(r.name, r.table or r.name) for r in config.repositories],
            "lookahead": config.lookahead_window,
            "window": window,
            "heartbeat_interval": config.heartbeat_interval,
            "job_lease": config.job_lease,
            "database": str(config.database_url),
        }

        frames: list[Snapshot] = []

        def read() -> Snapshot:
            # The frame before gives the limits' current rates (their starts since then).
            frames[:] = [read_snapshot(admin, **options, previous=frames[0] if frames else None)]
            return frames[0]

        console = stdout()
        if as_json:
            print_json(snapshot_json(read()))
        elif once:
            console.print(render(read()))
        elif console.is_terminal:
            live(read, interval, console)
        else:
            stream(read, interval, console)
