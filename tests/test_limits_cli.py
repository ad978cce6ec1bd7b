"""``infsched limits set|show|remove`` and InfiniteScheduler's limit methods."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from infsched.config import SchedulerConfig
from infsched.database import database_of
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.executors import ExecutorSpec
from infsched.flow_limits import FlowLimit, Limit, LimitError, LimitTarget
from infsched.hookspecs import hookimpl
from infsched.limit_store import LimitStore
from infsched.management.limits import LimitAdmin, declared_by, operator_limit
from infsched.management.scheduler import InfiniteScheduler
from infsched.plugins import load_plugins
from infsched.schema import limits as limits_table
from tests.engine_support import RecordingExecutor, repository_for
from tests.management_support import Cli, Seed, clean_cli, now


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def seed(every_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]) -> Seed:
    return Seed(engine_for(every_url))


def stored(seed: Seed) -> list[tuple[object, ...]]:
    """Every limit row as it is: what a refused command must leave unchanged."""
    with seed.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(sa.select(limits_table).order_by("target"))]


def target(raw: str) -> LimitTarget:
    return LimitTarget.parse(raw)


def test_set_show_and_remove(cli: Cli, seed: Seed) -> None:
    db = ("--db", seed.url())
    sms = ("limits", "set", "executor:sms", "--rate", "30", "--per", "minute", "--burst", "5")
    first = cli(*sms, *db)
    assert (first.code, first.out, first.err) == (
        0,
        "executor:sms: added (rate 0.5/s burst 5)\n",
        "",
    )
    assert cli(*sms, *db).out == "executor:sms: unchanged (rate 0.5/s burst 5)\n"
    acme = cli("limits", "set", "key:acme", "--max-concurrent", "3", "--json", *db).json()
    assert acme["result"] == "added"
    assert (acme["target"], acme["rate"], acme["max_concurrent"], acme["source"]) == (
        "key:acme",
        None,
        3,
        "operator",
    )
    assert cli("limits", "set", "executor:sms", "--rate", "2", *db).out == (
        "executor:sms: replaced (rate 2/s burst 1)\n"
    )
    until = now() + timedelta(minutes=1)
    LimitStore(seed.database).hold(["key:acme", "executor:mail"], until)  # a throttled gateway

    every = cli("limits", "show", "--json", *db).json()
    assert [v["target"] for v in every] == ["executor:mail", "executor:sms", "key:acme"]
    mail, sms_limit, acme = every
    assert (mail["source"], mail["rate"], mail["max_concurrent"]) == ("throttle", None, None)
    assert (sms_limit["rate"], sms_limit["burst"], sms_limit["held_until"]) == (2.0, 1, None)
    assert (sms_limit["started"], sms_limit["next_start"]) == (0, None)
    held = datetime.fromisoformat(acme["held_until"])
    assert abs(held - until) < timedelta(milliseconds=1)
    assert held.utcoffset() == timedelta(0)

    table = cli("limits", "show", *db).out
    assert "3 limits" in table
    line = next(t for t in table.splitlines() if "executor:sms" in t)
    assert "rate 2/s burst 1" in line
    assert "operator" in line
    assert "no limit (holds only)" in table

    shown = cli("limits", "show", "key:acme", *db).out.splitlines()
    assert shown[:3] == ["target: key:acme", "limit: max_concurrent 3", "source: operator"]
    assert shown[3].startswith("held until: ")
    assert datetime.fromisoformat(shown[3].removeprefix("held until: ")) == held.replace(
        microsecond=held.microsecond // 1000 * 1000
    )
    assert shown[4:6] == ["started: 0", "next start: -"]
    assert cli("limits", "show", "key:acme", "--json", *db).json() == acme

    assert cli("limits", "remove", "key:acme", *db).out == "key:acme: removed\n"
    gone = cli("limits", "remove", "executor:mail", "--json", *db).json()
    assert (gone["target"], gone["removed"]["source"], gone["in_force"]) == (
        "executor:mail",
        "throttle",
        None,
    )
    assert [v["target"] for v in cli("limits", "show", "--json", *db).json()] == ["executor:sms"]


def test_removing_an_operator_limit_puts_the_declared_one_back(
    cli: Cli, seed: Seed, tmp_path: Path
) -> None:
    config = tmp_path / "site.toml"  # not ./infsched.toml: the last removal is without it
    config.write_text('[[limits]]\nexecutor = "sms"\nrate = 10\nburst = 4\n')
    db = ("--config", str(config), "--db", seed.url())
    store = LimitStore(seed.database)
    declared = SchedulerConfig(limits=[{"executor": "sms", "rate": 10, "burst": 4}]).limits
    assert store.declare(declared, "config") == {"executor:sms": "added"}  # as a node starts

    assert cli("limits", "set", "executor:sms", "--rate", "1", *db).out == (
        "executor:sms: replaced (rate 1/s burst 1)\n"
    )
    assert store.declare(declared, "config") == {"executor:sms": "overridden"}  # a node restarts
    with seed.engine.begin() as conn:  # jobs started under the operator's limit
        conn.execute(limits_table.update().values(started=7))
    assert cli("limits", "remove", "executor:sms", *db).out == (
        "executor:sms: removed; declared again (config): rate 10/s burst 4\n"
    )
    [again] = cli("limits", "show", "--json", *db).json()
    assert (again["source"], again["rate"], again["burst"], again["started"]) == (
        "config",
        10.0,
        4,
        7,  # the target's state is kept: its counter goes on
    )
    # Removed once more, nothing is set over the declared limit: the row goes.
    removed = cli("limits", "remove", "executor:sms", "--db", seed.url(), "--json").json()
    assert removed["in_force"] is None
    assert stored(seed) == []


BAD_SET = [
    (("foo:bar", "--rate", "1"), "limit 'foo:bar': unknown scope 'foo' (one of executor, "),
    (("sms", "--rate", "1"), "limit 'sms': write SCOPE:NAME, SCOPE one of executor, "),
    (("executor:", "--rate", "1"), "limit executor: name '' must be a non-empty string"),
    (
        ("executor:sms", "--rate", "0"),
        "limit executor:sms: rate: 0.0 must be a number of starts per second > 0",
    ),
    (
        ("executor:sms", "--rate", "-2", "--per", "minute"),
        "limit executor:sms: rate: -2.0 must be a number of starts per minute > 0",
    ),
    (("executor:sms", "--rate", "inf"), "limit executor:sms: rate: inf must be a number"),
    (
        ("executor:sms", "--rate", "5", "--burst", "0"),
        "limit executor:sms: burst: 0 must be a whole number >= 1",
    ),
    (
        ("executor:sms", "--max-concurrent", "0"),
        "limit executor:sms: max_concurrent: 0 must be a whole number >= 1",
    ),
    (("executor:sms",), "limit executor:sms: give a rate, max_concurrent or both"),
    (
        ("executor:sms", "--max-concurrent", "2", "--burst", "3"),
        "limit executor:sms: burst: 3 needs a rate",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_SET, ids=[" ".join(a) for a, _ in BAD_SET])
def test_bad_input_to_set_is_one_line_and_changes_nothing(
    cli: Cli, seed: Seed, args: tuple[str, ...], message: str
) -> None:
    db = ("--db", seed.url())
    cli("limits", "set", "executor:sms", "--rate", "7", *db)
    before = stored(seed)
    result = cli("limits", "set", *args, *db)
    assert (result.code, result.out) == (1, "")
    assert result.err.startswith(f"error: {message}"), result.err
    assert result.err.count("\n") == 1
    as_json = cli("limits", "set", *args, "--json", *db)
    assert as_json.code == 1
    assert json.loads(as_json.err)["error"].startswith(message)
    assert stored(seed) == before


def test_an_unknown_target_to_show_or_remove_is_one_line_and_changes_nothing(
    cli: Cli, seed: Seed
) -> None:
    db = ("--db", seed.url())
    for command in ("show", "remove"):
        result = cli("limits", command, "executor:sms", *db)
        assert (result.code, result.out) == (1, "")
        assert result.err == "error: no limit on executor:sms (no target has a limit)\n"
    cli("limits", "set", "executor:sms", "--rate", "7", *db)
    cli("limits", "set", "key:acme", "--max-concurrent", "1", *db)
    before = stored(seed)
    for command in ("show", "remove"):
        result = cli("limits", command, "executor:smss", *db)
        assert (result.code, result.out) == (1, ""), command
        assert result.err == (
            "error: no limit on executor:smss (the limits: executor:sms, key:acme)\n"
        )
        wrong = cli("limits", command, "exec:sms", "--json", *db)
        assert wrong.code == 1
        assert json.loads(wrong.err)["error"].startswith("limit 'exec:sms': unknown scope 'exec'")
    assert stored(seed) == before


def test_operator_limits_are_checked_before_anything_is_stored() -> None:
    assert operator_limit("repository:orders", rate=90, per="minute", burst=3) == Limit(
        target("repository:orders"), FlowLimit(rate=1.5, burst=3)
    )
    assert operator_limit(target("key:a"), max_concurrent=2).limit == FlowLimit(max_concurrent=2)
    cases: list[tuple[dict[str, Any], str]] = [
        ({"rate": 1, "per": "hour"}, "limit key:a: per: 'hour' must be 'second' or 'minute'"),
        ({"rate": "5"}, "limit key:a: rate: '5' must be a number of starts per second > 0"),
        ({"rate": True}, "limit key:a: rate: True must be a number"),
        ({"rate": float("nan")}, "limit key:a: rate: nan must be a number"),
        ({"rate": 1, "burst": 1.5}, "limit key:a: burst: 1.5 must be a whole number >= 1"),
    ]
    for kwargs, message in cases:
        with pytest.raises(LimitError) as refused:
            operator_limit("key:a", **kwargs)
        assert str(refused.value).startswith(message), kwargs
    with pytest.raises(LimitError, match=r"^limit 5: the target must be text, SCOPE:NAME$"):
        operator_limit(5, rate=1)  # type: ignore[arg-type]  # what is refused is the test


class GatewayPlugin:
    """A plugin whose executor declares its limit from the plugin's config section."""

    @hookimpl
    def register_executors(self) -> list[ExecutorSpec]:
        def limit(section: Any) -> FlowLimit | None:
            rate = section.get("rate")
            return None if rate is None else FlowLimit(rate=rate)

        return [
            ExecutorSpec(name="gateway", factory=lambda _: RecordingExecutor(), limit=limit),
            ExecutorSpec(name="unused", factory=lambda _: RecordingExecutor(), limit=FlowLimit(1)),
        ]


def test_the_declarations_a_removal_puts_back_are_what_a_node_with_the_config_declares() -> None:
    plugins = load_plugins()
    plugins.register(GatewayPlugin(), "gateway_plugin")
    config = SchedulerConfig(
        repositories=[
            {"name": "texts", "entity": "SmsEntity", "executor": "gateway"},
            {"name": "orders", "entity": "OrderEntity", "executor": "orders"},
        ],
        limits=[{"repository": "orders", "max_concurrent": 4}],
        plugins={"gateway_plugin": {"rate": 12.5}},
    )
    assert declared_by(config, plugins) == [
        (Limit(target("repository:orders"), FlowLimit(max_concurrent=4)), "config"),
        (Limit(target("executor:gateway"), FlowLimit(rate=12.5)), "executor gateway"),
    ]
    # [[limits]] wins over an executor's own; an executor no repository names declares nothing.
    config = SchedulerConfig(
        repositories=config.repositories,
        limits=[{"executor": "gateway", "rate": 2}],
        plugins=config.plugins,
    )
    assert declared_by(config, plugins) == [
        (Limit(target("executor:gateway"), FlowLimit(rate=2.0)), "config")
    ]


def test_a_scheduler_sets_lists_and_removes_limits(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    engine = engine_for(sqlite_url)
    repo = repository_for(sqlite_url, engine=engine)
    spec = ExecutorSpec(
        name="remind", factory=lambda _: RecordingExecutor(), limit=FlowLimit(rate=4.0)
    )
    config = SchedulerConfig(
        database_url=sqlite_url,
        heartbeat_interval=0.5,
        limits=[{"repository": "reminders", "max_concurrent": 2}],
    )
    scheduler = InfiniteScheduler(
        [RepositoryBinding(repo, executor="remind")],
        config,
        executors={"remind": spec},
        engine=engine,
    )
    with scheduler:  # starting puts the declared limits
        assert [(s.target.id, s.source) for s in scheduler.limits()] == [
            ("executor:remind", "executor remind"),
            ("repository:reminders", "config"),
        ]
        assert scheduler.set_limit("executor:remind", rate=60, per="minute") == "replaced"
        assert scheduler.set_limit("key:acme", max_concurrent=1) == "added"
        assert scheduler.flow.rules().limited == {
            "executor:remind",
            "repository:reminders",
            "key:acme",
        }  # this node's claims follow at once
        [remind] = [s for s in scheduler.limits() if s.target.id == "executor:remind"]
        assert (remind.source, remind.limit) == ("operator", FlowLimit(rate=1.0))
        in_force = scheduler.remove_limit("executor:remind")
        assert in_force is not None
        assert (in_force.source, in_force.limit) == ("executor remind", FlowLimit(rate=4.0))
        assert scheduler.remove_limit(target("key:acme")) is None
        assert "key:acme" not in scheduler.flow.rules().limited
        with pytest.raises(LimitError, match=r"^no limit on key:acme \(the limits: executor:"):
            scheduler.remove_limit("key:acme")
        with pytest.raises(LimitError, match="rate: 0 must be a number"):
            scheduler.set_limit("key:acme", rate=0)
        assert [s.target.id for s in scheduler.limits()] == [
            "executor:remind",
            "repository:reminders",
        ]


def test_a_limit_admin_without_declarations_only_removes(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    database = database_of(engine_for(sqlite_url))
    Seed(database.engine)  # the tables
    admin = LimitAdmin(LimitStore(database))
    limit, put = admin.set("repository:orders", rate=5, burst=2)
    assert (str(limit), put) == ("repository:orders: rate 5/s burst 2", "added")
    removal = admin.remove("repository:orders")
    assert (removal.removed.limit, removal.in_force) == (FlowLimit(rate=5.0, burst=2), None)
    assert admin.limits() == []
