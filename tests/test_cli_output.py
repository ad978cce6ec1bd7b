"""What commands print: whole lines off a terminal, JSON with offsets, no files from reading."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.config import load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.jobstore.base import Outcome
from infsched.plugins import load_plugins
from infsched_sms import SmsEntity
from tests.engine_support import wait_until
from tests.management_support import Cli, Seed, clean_cli, now

INFSCHED = str(Path(sys.executable).with_name("infsched"))
#: Longer than a narrow terminal: rich folded or cut such names off a terminal.
LONG = "appointment_reminders_for_the_north_region"
KEY = re.compile(rf"{LONG}:\d+:\d{{8}}T\d{{6}}\.\d{{6}}Z")


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(sqlite_url))


def to_file(tmp_path: Path, *args: str) -> tuple[int, str, str]:
    """``infsched ARGS > out 2> err`` in a 40-column environment; (exit code, out, err)."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with out.open("w") as stdout, err.open("w") as stderr:
        code = subprocess.call(
            [INFSCHED, *args],
            stdout=stdout,
            stderr=stderr,
            cwd=tmp_path,
            env={**os.environ, "COLUMNS": "40"},
        )
    return code, out.read_text(), err.read_text()


def _default_interrupt() -> None:
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def run_until(
    args: tuple[str, ...],
    output: Path,
    done: Callable[[str], bool],
    what: str,
    signum: signal.Signals,
) -> int:
    """Start ``infsched ARGS`` writing stdout and stderr to `output` (COLUMNS=40), wait
    until `done` holds for what it wrote, then send `signum`; the exit code."""
    with output.open("w") as file:
        process = subprocess.Popen(
            [INFSCHED, *args],
            stdout=file,
            stderr=file,
            env={**os.environ, "COLUMNS": "40"},
            # A run started in the background by a non-interactive shell ignores SIGINT, and
            # a child started so would too: Python then installs no Ctrl-C handler at all.
            preexec_fn=_default_interrupt,
        )
        try:
            wait_until(lambda: done(output.read_text()), timeout=30, what=what)
        finally:
            process.send_signal(signum)
            code = process.wait(timeout=60)
    return code


# -- nothing wrapped or cut off a terminal --


def test_job_keys_printed_to_a_file_stay_on_one_line(seed: Seed, tmp_path: Path) -> None:
    keys = [
        seed.job(i, repository=LONG, state="dead", attempt=3, last_error="gateway down " * 8)
        for i in range(3)
    ]
    seed.outcome(0, Outcome.FAILED, repository=LONG, key=keys[0], error="timeout " * 10)

    for args in (("jobs", "list"), ("dashboard", "--once")):
        code, out, err = to_file(tmp_path, *args, "--db", seed.url())
        assert code == 0, err
        assert set(KEY.findall(out)) == set(keys), out
        for key in keys:
            # Each time the whole key in one cell, its dead letter's error on the same line.
            lines = [line for line in out.splitlines() if key in line]
            assert all(re.search(rf"│ {re.escape(key)}\s*│", line) for line in lines), lines
            assert any("gateway down " * 8 in line for line in lines), lines

    code, out, err = to_file(tmp_path, "jobs", "show", keys[0], "--db", seed.url())
    assert code == 0, err
    [job_line] = [line for line in out.splitlines() if line.startswith("  job ")]
    assert job_line.startswith(f"  job {keys[0]}  attempt 3  due "), job_line
    assert re.search(r"│ timeout (timeout ){9}\s*│", out), out


def test_stats_shows_whole_repository_names(seed: Seed, tmp_path: Path) -> None:
    seed.job(1, repository=LONG)
    seed.job(1, repository="demo_notifications")
    code, out, err = to_file(tmp_path, "stats", "--db", seed.url())
    assert code == 0, err
    assert re.search(rf"│ {LONG}\s*│", out), out
    assert re.search(r"│ demo_notifications\s*│", out), out
    assert "…" not in out


def test_stats_on_a_narrow_terminal_folds_repository_names_but_never_cuts_them(
    seed: Seed, tmp_path: Path
) -> None:
    seed.job(1, repository=LONG)
    out = subprocess.run(
        [INFSCHED, "stats", "--db", seed.url()],
        capture_output=True,
        text=True,
        check=True,
        # rich treats the output as a terminal of 80 columns (no colour codes to strip).
        env={**os.environ, "TTY_COMPATIBLE": "1", "NO_COLOR": "1", "COLUMNS": "80"},
    ).stdout
    plain = re.sub(r"\x1b\[[0-9;]*m", "", out)
    assert "…" not in plain
    first_cells = [
        line.split("│")[1].strip() for line in plain.splitlines() if line.startswith("│")
    ]
    assert "".join(first_cells) == LONG


def test_run_logs_to_a_file_keep_each_job_key_on_its_line(
    tmp_path: Path, sqlite_url: DatabaseUrl
) -> None:
    config_path = tmp_path / "infsched.toml"
    config_path.write_text(
        f"""
database_url = "{sqlite_url.sqlalchemy_url.render_as_string(hide_password=False)}"
fetch_interval = 0.5
lookahead_window = 2
heartbeat_interval = 0.5

[[repositories]]
name = "{LONG}"
entity = "SmsEntity"
executor = "sms"

[plugins.sms]
transport = "console"
"""
    )
    [configured] = build_repositories(load_config(config_path).config, load_plugins())
    repo = configured.repository
    repo.maintain()
    due = datetime.now(UTC) + timedelta(seconds=1)
    message = "Your appointment with the northern region office is tomorrow at nine " * 2
    repo.insert_many(
        [
            SmsEntity(scheduled_time=due, phone_number="+4915112345678", sender="ACME", message=m)
            for m in (f"{message}{i}" for i in range(4))
        ]
    )
    log = tmp_path / "run.log"
    try:
        code = run_until(
            ("run", "--config", str(config_path)),
            log,
            lambda text: text.count("SMS ACME -> +4915112345678") >= 4,
            "the node to send the texts",
            signal.SIGTERM,
        )
    finally:
        repo.engine.dispose()
    assert code == 0
    text = log.read_text()
    sent = [line for line in text.splitlines() if "SMS ACME -> +4915112345678" in line]
    assert len(sent) == 4, text
    # One line per record: its time with the offset, the job key and the whole message.
    for line in sent:
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}\+00:00 INFO ", line), line
        assert KEY.search(line), line
        assert message in line, line
    assert len(set(KEY.findall(text))) == 4


def test_the_demo_summary_is_a_line_of_its_own_off_a_terminal(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    code, out, err = to_file(tmp_path, "demo", "--seconds", "1", "--per-kind", "1", "--db", url)
    assert code == 0, err
    lines = out.splitlines()
    summary = next(i for i, line in enumerate(lines) if "demo summary:" in line)
    assert lines[summary].startswith("demo summary: 3 entities in "), lines[summary]
    assert lines[summary - 1].startswith("╰"), out  # the executors panel ends on the line before
    # The executors' log lines carry their time with its offset.
    assert re.search(r"│ \d\d:\d\d:\d\d\+00:00  ", out), out


def test_demo_json_is_the_summary_alone_on_stdout(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    code, out, err = to_file(
        tmp_path, "demo", "--seconds", "1", "--per-kind", "1", "--db", url, "--json"
    )
    assert code == 0, err
    summary = json.loads(out)
    assert summary["seeded"] == 3
    assert summary["complete"] is True
    assert sum(summary["outcomes"].values()) == 3


# -- read-only commands create nothing --

READ_ONLY = [
    ("stats",),
    ("jobs", "list"),
    ("jobs", "show", "sms:1:20250101T000000.000000Z"),
    ("nodes",),
    ("dashboard", "--once"),
    ("limits", "show"),
    ("partitions", "status"),
    ("config", "show"),
    ("plugins", "list"),
    ("orders", "events", "o-1"),
]


@pytest.mark.parametrize("command", READ_ONLY, ids=" ".join)
@pytest.mark.parametrize("where", ["default", "--db", "--db before"])
def test_read_only_commands_leave_no_file_behind(
    cli: Cli, tmp_path: Path, command: tuple[str, ...], where: str
) -> None:
    (tmp_path / "infsched.toml").write_text(
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n\n'
        '[plugins.orders]\ndatabase_url = "sqlite:///./orders.db"\n'
    )
    flag = ["--db", "sqlite:///./elsewhere.db"]
    if where == "default":
        args = list(command)
    elif where == "--db":
        args = [*command, *flag]
    else:
        args = [*flag, *command]
    result = cli(*args)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["infsched.toml"]
    if command[0] not in {"config", "plugins"}:
        assert result.code == 1
        assert result.err.endswith(": no such database file\n"), result.err
        assert result.err.count("\n") == 1


# -- JSON --

ISO_TIME = re.compile(r"^\d{4}-\d\d-\d\d[T ]\d\d:\d\d")


def times(value: Any) -> Iterator[str]:
    """Every string in a JSON value that is a date and time."""
    if isinstance(value, dict):
        for item in value.values():
            yield from times(item)
    elif isinstance(value, list):
        for item in value:
            yield from times(item)
    elif isinstance(value, str) and ISO_TIME.match(value):
        yield value


def assert_every_time_has_an_offset(value: Any) -> int:
    found = list(times(value))
    for text in found:
        assert datetime.fromisoformat(text).utcoffset() is not None, text
    return len(found)


def test_jobs_show_json_gives_every_time_its_offset(cli: Cli, seed: Seed) -> None:
    key = seed.job(7, state="waiting", attempt=1, last_error="first try failed")
    seed.outcome(7, Outcome.FAILED, key=key, error="first try failed")
    result = cli("jobs", "show", key, "--db", seed.url(), "--json")
    assert result.code == 0, result.err
    [status] = result.json()
    assert status["live"]["due_at"]
    assert status["outcomes"][0]["finished_at"]
    # due, run at, created (live); finished, due, started (outcome) at least.
    assert assert_every_time_has_an_offset(result.json()) >= 6


@pytest.mark.parametrize(
    "command",
    [("jobs", "list"), ("nodes",), ("stats",), ("dashboard", "--once"), ("partitions", "status")],
    ids=" ".join,
)
def test_json_of_reading_commands_has_offsets_on_every_time(
    cli: Cli, seed: Seed, tmp_path: Path, command: tuple[str, ...]
) -> None:
    (tmp_path / "infsched.toml").write_text(
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
    )
    config = load_config(tmp_path / "infsched.toml", flags={"database_url": seed.url()}).config
    [configured] = build_repositories(config, load_plugins())
    configured.repository.maintain()
    configured.repository.insert_many(
        [
            SmsEntity(
                scheduled_time=now(), phone_number="+4915112345678", sender="ACME", message="hi"
            )
        ]
    )
    configured.repository.engine.dispose()
    seed.job(1, state="dead", attempt=3)
    seed.outcome(2, Outcome.SUCCEEDED)
    seed.node("node-a", heartbeat_age=1.0)
    result = cli(*command, "--db", seed.url(), "--json")
    assert result.code == 0, result.err
    assert assert_every_time_has_an_offset(result.json()) >= 1


def test_db_init_and_partitions_status_and_maintain_print_json(cli: Cli, tmp_path: Path) -> None:
    (tmp_path / "infsched.toml").write_text(
        '[[repositories]]\nname = "sms"\nentity = "SmsEntity"\nexecutor = "sms"\n'
        "retention_days = 2\nprecreate_days = 1\n"
    )
    url = f"sqlite:///{tmp_path / 'sched.db'}"
    init = cli("db", "init", "--db", url, "--json")
    assert init.code == 0, init.err
    assert "infsched_jobs" in init.json()["created"]
    assert cli("db", "init", "--db", url, "--json").json()["created"] == []

    maintained = cli("partitions", "maintain", "--db", url, "--json")
    assert maintained.code == 0, maintained.err
    [report] = maintained.json()
    assert report["repository"] == "sms"
    assert len(report["created"]) >= 2
    assert report["dropped"] == []

    status = cli("partitions", "status", "--db", url, "--json")
    assert status.code == 0, status.err
    [repo] = status.json()
    assert (repo["repository"], repo["backend"], repo["entity"]) == (
        "sms",
        "multi_table",
        "SmsEntity",
    )
    assert repo["retention_days"] == 2
    assert {s["name"] for s in repo["shards"]} == set(report["created"])
    assert all(s["rows"] == 0 for s in repo["shards"])


# -- smaller defects --


def test_retrying_a_waiting_job_prints_its_error_without_a_progress_bar(
    cli: Cli, seed: Seed
) -> None:
    key = seed.job(1, state="waiting")
    result = cli("jobs", "retry", key, "--db", seed.url())
    assert result.code == 1
    assert result.err.startswith("error: ")
    assert result.err.count("\n") == 1, result.err
    assert "retrying dead letters" not in result.err


def test_nodes_and_the_dashboard_call_a_node_by_the_same_word(
    cli: Cli, seed: Seed, tmp_path: Path
) -> None:
    # Heartbeats every 5 s, leases of 30 s: 12 s silent is two beats missed, not yet dead.
    (tmp_path / "infsched.toml").write_text("heartbeat_interval = 5\njob_lease = 30\n")
    seed.node("quiet-node", heartbeat_age=12.0)
    seed.node("gone-node", heartbeat_age=45.0)
    seed.node("busy-node", heartbeat_age=1.0, member="m3 at db3:3306")
    listed = cli("nodes", "--db", seed.url(), "--json").json()
    nodes = {n["node_id"]: n["liveness"] for n in listed}
    assert {n["node_id"]: n["database_member"] for n in listed}["busy-node"] == "m3 at db3:3306"
    frame = cli("dashboard", "--once", "--json", "--db", seed.url()).json()
    shown = {n["node_id"]: n["liveness"] for n in frame["nodes"]}
    expected = {"quiet-node": "suspected", "gone-node": "dead", "busy-node": "alive"}
    assert nodes == shown == expected

    table = cli("nodes", "--db", seed.url()).out
    board = cli("dashboard", "--once", "--db", seed.url()).out
    for node, word in expected.items():
        assert word in next(line for line in table.splitlines() if node in line)
        assert word in next(line for line in board.splitlines() if node in line)
    assert "m3 at db3:3306" in next(line for line in table.splitlines() if "busy-node" in line)
    assert "stale" not in board


def test_counts_take_the_plural_they_need(cli: Cli, seed: Seed) -> None:
    seed.node("only-node", heartbeat_age=1.0)
    one = seed.job(1, state="waiting")
    assert "1 node\n" in cli("nodes", "--db", seed.url()).out
    assert "1 job\n" in cli("jobs", "list", "--db", seed.url()).out
    assert cli("jobs", "run-now", one, "--db", seed.url()).out == "1 job due now\n"
    assert cli("jobs", "cancel", one, "--db", seed.url()).out == "cancelled 1 job\n"
    seed.node("other-node", heartbeat_age=1.0)
    assert "2 nodes\n" in cli("nodes", "--db", seed.url()).out
    assert "0 jobs\n" in cli("jobs", "list", "--db", seed.url()).out


def test_table_times_carry_their_offset(cli: Cli, seed: Seed) -> None:
    due = now().replace(microsecond=0)
    seed.job(1, state="waiting", due=due)
    out = cli("jobs", "list", "--db", seed.url()).out
    assert due.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.000+00:00") in out


def test_bench_progress_in_a_file_is_short_lines_with_offset_times(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    code, out, err = to_file(tmp_path, "bench", "--stage", "insert", "--rows", "1000", "--db", url)
    assert code == 0, err
    lines = err.splitlines()
    assert lines, err
    for line in lines:
        # Console.log padded each line to the (unlimited) width: megabytes of blanks.
        assert len(line) < 200, len(line)
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\+00:00 insert/", line), line
    assert re.search(r"│ insert │ multi_table │ 1000 │", out), out


def test_the_dashboard_off_a_terminal_prints_frame_after_frame(seed: Seed, tmp_path: Path) -> None:
    key = seed.job(1, repository=LONG, state="dead", attempt=3)
    out = tmp_path / "frames.txt"
    code = run_until(
        ("dashboard", "--interval", "0.2", "--db", seed.url()),
        out,
        lambda text: text.count("infsched dashboard —") >= 2,
        "two frames in the file",
        signal.SIGINT,
    )
    text = out.read_text()
    assert code == 0, text
    assert "\x1b[?1049h" not in text  # no alternate screen in a file
    frames = text.count("infsched dashboard —")
    assert text.count(key) >= frames
    assert max(len(line) for line in text.splitlines()) < 400
