"""The bench plugin: ``infsched bench`` comes from it, and the probe stays out of installations."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from infsched.cli.context import AppContext
from infsched.cli.main import build_cli
from infsched.plugins import load_plugins


def test_bench_is_a_command_of_the_bench_plugin_not_of_the_core() -> None:
    registry = load_plugins(env={})
    cli = build_cli(registry)
    assert "bench" in cli.commands
    bench = registry.infos["bench"]
    assert (bench.status, bench.distribution) == ("ok", "infsched-bench")
    assert bench.registers == ["command: bench"]
    # The probe is installed only for the harness's node processes.
    registered = [item for info in registry.infos.values() for item in info.registers]
    assert not [item for item in registered if "probe" in item.lower()]

    without = load_plugins(env={"INFSCHED_DISABLE_PLUGINS": "bench"})
    assert "bench" not in build_cli(without).commands


def test_a_short_insert_stage_prints_one_json_line_per_backend(tmp_path: Path) -> None:
    registry = load_plugins(env={})
    url = f"sqlite:///{tmp_path / 'bench.db'}"
    result = CliRunner().invoke(
        build_cli(registry),
        ["bench", "--stage", "insert", "--rows", "1000", "--db", url, "--json"],
        obj=AppContext(plugins=registry),
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert lines
    assert {line["stage"] for line in lines} == {"insert"}
    assert all(line["server"] == "sqlite" for line in lines)
