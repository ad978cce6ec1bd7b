"""Plugins as users install them: built, pip-installed into a fresh environment, listed, removed.

The fresh virtual environment gets the core installed from this repository
(``pip install --no-deps --no-build-isolation --no-index``), and reaches the
core's dependencies through a path entry listing the development
environment's packages one by one, without any infsched distribution: so
nothing comes from the network, and no plugin is there until it is
installed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: Installed distributions of this repository: left out of the fresh environment's path.
_OURS = ("infsched", "infinite_scheduler", "__editable__", "_virtualenv", "__pycache__")


class FreshEnv:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.python = root / "bin" / "python"
        self.infsched = root / "bin" / "infsched"

    def pip(self, *args: str) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "pip", "--python", str(self.python), "--quiet", *args],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, f"pip {' '.join(args)}:\n{result.stdout}{result.stderr}"

    def install(self, source: Path) -> None:
        self.pip("install", "--no-deps", "--no-build-isolation", "--no-index", str(source))

    def plugins(self) -> dict[str, dict[str, object]]:
        out = subprocess.run(
            [str(self.infsched), "plugins", "list", "--json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        return {p["name"]: p for p in json.loads(out)}


def _copy(source: Path, target: Path) -> Path:
    """Build from a copy: building in place would leave build/ and egg-info in the tree."""
    shutil.copytree(
        source, target, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build")
    )
    return target


@pytest.fixture(scope="module")
def fresh_env(tmp_path_factory: pytest.TempPathFactory) -> FreshEnv:
    base = tmp_path_factory.mktemp("fresh")
    env = FreshEnv(base / "venv")
    venv.EnvBuilder(with_pip=False).create(env.root)
    deps = base / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        name = entry.name.lower()
        if not name.startswith(_OURS) and not name.endswith(".pth"):
            (deps / entry.name).symlink_to(entry)
    site = next((env.root / "lib").glob("python3*/site-packages"))
    (site / "development-deps.pth").write_text(f"{deps}\n")
    core = base / "core-src"
    core.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, core / name)
    _copy(REPO / "core", core / "core")
    env.install(core)
    return env


def test_installing_a_plugin_lists_it_and_uninstalling_removes_it(
    fresh_env: FreshEnv, tmp_path: Path
) -> None:
    before = fresh_env.plugins()
    assert "sms" not in before
    assert {"log_sink", "builtin"} <= set(before)
    fresh_env.install(_copy(REPO / "plugins" / "sms", tmp_path / "sms"))
    sms = fresh_env.plugins()["sms"]
    assert sms["status"] == "ok", sms
    assert sms["distribution"] == "infsched-sms"
    assert "entity: SmsEntity" in sms["registers"]  # type: ignore[operator]
    assert "executor: sms" in sms["registers"]  # type: ignore[operator]
    assert "command: sms" in sms["registers"]  # type: ignore[operator]
    fresh_env.pip("uninstall", "--yes", "infsched-sms")
    assert "sms" not in fresh_env.plugins()


def test_the_guides_example_plugin_builds_installs_and_passes_its_tests(
    fresh_env: FreshEnv, tmp_path: Path
) -> None:
    example = REPO / "docs" / "examples" / "spool"
    fresh_env.install(_copy(example, tmp_path / "spool"))
    try:
        spool = fresh_env.plugins()["spool"]
        assert spool["status"] == "ok", spool
        assert spool["registers"] == ["entity: SpoolEntity", "executor: spool"]
        # The example's own tests, run against the installed distribution.
        result = subprocess.run(
            [str(fresh_env.python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests"],
            cwd=tmp_path / "spool",
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "4 passed" in result.stdout
    finally:
        fresh_env.pip("uninstall", "--yes", "infsched-spool")
    assert "spool" not in fresh_env.plugins()
