"""The import contracts (pyproject.toml, [tool.importlinter]) hold, and they bite.

`make layers` runs ``lint-imports`` on the tree; here it runs on a copy of the
core with one import added that breaks a contract, and must fail naming it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` run on `tree` (its own pyproject.toml and core/infsched)."""
    env = {**os.environ, "PYTHONPATH": str(tree / "core")}
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", str(tree / "pyproject.toml")],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """A copy of pyproject.toml and the core package, to break."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    shutil.copytree(
        ROOT / "core" / "infsched",
        tmp_path / "core" / "infsched",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return tmp_path


def add_module(tree: Path, module: str, source: str) -> None:
    path = tree / "core" / Path(*module.split(".")).with_suffix(".py")
    path.write_text(source)


def test_the_tree_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "source", "broken"),
    [
        # The example: the engine reaching up into management.
        (
            "infsched.engine.upward",
            "from infsched.management import JobAdmin\n\nADMIN = JobAdmin\n",
            "infsched.engine.upward -> infsched.management",
        ),
        # An import hidden in a function is an import all the same.
        (
            "infsched.metrics.upward",
            "def node() -> object:\n"
            "    from infsched.engine.scheduler import SchedulerNode\n\n"
            "    return SchedulerNode\n",
            "infsched.metrics.upward -> infsched.engine.scheduler",
        ),
        # Repositories and the job store are independent of each other.
        (
            "infsched.repositories.upward",
            "from infsched.jobstore.base import JobState\n\nSTATE = JobState\n",
            "infsched.repositories.upward -> infsched.jobstore.base",
        ),
        # A plain value reaching for the database layer.
        (
            "infsched.dialects.upward",
            "import infsched.database\n\nDATABASE = infsched.database\n",
            "infsched.dialects.upward -> infsched.database",
        ),
        # The public API's root lazily imports everything: the core never imports it.
        (
            "infsched.cluster.upward",
            "from infsched import __version__\n\nVERSION = __version__\n",
            "infsched.cluster.upward -> infsched",
        ),
    ],
)
def test_an_import_breaking_a_contract_fails_the_check(
    tree: Path, module: str, source: str, broken: str
) -> None:
    add_module(tree, module, source)
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert broken in result.stdout


def test_a_top_level_module_without_a_layer_fails_the_check(tree: Path) -> None:
    add_module(tree, "infsched.unplaced", '"""A new module nobody gave a layer."""\n')
    result = lint_imports(tree)
    assert result.returncode != 0, result.stdout
    assert "infsched.unplaced" in result.stdout
