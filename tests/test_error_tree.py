"""Every exception the product raises is an InfschedError, or a built-in on purpose.

The scan reads each ``raise`` in core/infsched and the plugins, finds what class it
raises (a class named there, or the return type of the function or method it calls),
and compares everything outside the InfschedError tree with the table "Built-in
exceptions raised on purpose" in docs/api.md: a raise missing from the table fails,
and so does a row no raise matches any more.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import re
import sys
import types
from collections.abc import Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from infsched.clock import require_utc
from infsched.config import SchedulerConfig
from infsched.dburl import DatabaseUrl
from infsched.engine.binding import RepositoryBinding
from infsched.engine.retry import RetryPolicy
from infsched.errors import (
    ConfigError,
    IdClockRangeError,
    InfschedError,
    InvalidArgumentError,
    InvalidNameError,
    NaiveDatetimeError,
    SchedulerStateError,
)
from infsched.executors import ExecutorSpec
from infsched.hookspecs import hookimpl
from infsched.management.scheduler import InfiniteScheduler
from infsched.metrics.log_sink import LogMetricsSink
from infsched.names import check_name
from infsched.plugins import load_plugins
from infsched.repositories.ids import IdGenerator
from tests.engine_support import RecordingExecutor, repository_for

ROOT = Path(__file__).resolve().parents[1]
API_DOC = ROOT / "docs" / "api.md"
#: The core package and each plugin's package (not its .egg-info beside it).
SOURCES = [
    ROOT / "core" / "infsched",
    *sorted(p.parent for p in (ROOT / "plugins").glob("*/infsched_*/__init__.py")),
]
ALLOWLIST_HEADING = "### Built-in exceptions raised on purpose"


@attrs.frozen
class Raise:
    """One ``raise`` outside the InfschedError tree: where, and the class it raises."""

    file: str  # relative to the repository root
    function: str  # qualified name of the enclosing function, or "<module>"
    exception: str  # the class's name
    line: int


@attrs.frozen
class Allowed:
    file: str
    function: str  # "*" for any function of the file
    exception: str

    def matches(self, found: Raise) -> bool:
        return (
            self.file == found.file
            and self.function in ("*", found.function)
            and self.exception == found.exception
        )


def allowlist(text: str) -> list[Allowed]:
    """The rows of the allowlist table: | `file` | `function` | `Exception` | why |."""
    section = text.split(ALLOWLIST_HEADING, 1)[1]
    rows: list[Allowed] = []
    for line in section.splitlines()[1:]:
        if line.startswith("#"):
            break
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 4 or not cells[0].startswith("`"):
            continue
        file, function, exception = (cell.strip("`") for cell in cells[:3])
        assert cells[3], f"allowlist row for {file} {function} gives no reason"
        rows.append(Allowed(file, function, exception))
    return rows


def module_name(path: Path, source: Path) -> str:
    parts = [source.name, *path.relative_to(source).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


class _Raises(ast.NodeVisitor):
    """Each ``raise X``/``raise X(...)`` with the qualified name of where it is."""

    def __init__(self) -> None:
        self.scope: list[str] = []
        self.found: list[tuple[str, ast.expr, int]] = []

    def _nested(self, node: ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        self.scope.append(node.name)
        self.generic_visit(node)
        self.scope.pop()

    visit_ClassDef = visit_FunctionDef = visit_AsyncFunctionDef = _nested

    def visit_Raise(self, node: ast.Raise) -> None:
        if node.exc is not None:
            raised = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
            self.found.append((".".join(self.scope) or "<module>", raised, node.lineno))


def _dotted(node: ast.expr) -> list[str] | None:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else [*base, node.attr]
    return None  # raise errors[0], raise make()(…): a value, not a name


def _resolve(module: types.ModuleType, function: str, names: list[str]) -> object:
    """What a dotted name in `function` of `module` stands for; None for a local value."""
    head, *rest = names
    if head in ("self", "cls"):
        obj: object = module
        for part in function.split(".")[:-1]:  # the enclosing class
            obj = getattr(obj, part)
    elif head in vars(module):
        obj = vars(module)[head]
    elif hasattr(builtins, head):
        obj = getattr(builtins, head)
    else:
        return None  # a local variable: re-raising what was caught or collected
    for part in rest:
        obj = getattr(obj, part)
    return obj


def _raised_class(obj: object, where: str) -> type[BaseException]:
    if isinstance(obj, type):
        assert issubclass(obj, BaseException), f"{where}: raises {obj!r}, not an exception"
        return obj
    if callable(obj):  # raise _bad(...): the helper's return type says what it makes
        returned = getattr(obj, "__annotations__", {}).get("return")
        if isinstance(returned, str):  # from __future__ import annotations: only this one
            returned = eval(returned, vars(sys.modules[getattr(obj, "__module__", "")]))
        unannotated = f"{where}: raises what {obj!r} returns, not annotated as an exception"
        assert isinstance(returned, type), unannotated
        assert issubclass(returned, BaseException), unannotated
        return returned
    raise AssertionError(f"{where}: raises {obj!r}")


def raises_outside_the_tree(sources: list[Path], root: Path) -> Iterator[Raise]:
    for source in sources:
        for path in sorted(source.rglob("*.py")):
            module = importlib.import_module(module_name(path, source))
            visitor = _Raises()
            visitor.visit(ast.parse(path.read_text(), str(path)))
            for function, raised, line in visitor.found:
                file = str(path.relative_to(root))
                names = _dotted(raised)
                obj = None if names is None else _resolve(module, function, names)
                if obj is None:
                    continue
                cls = _raised_class(obj, f"{file}:{line}")
                if not issubclass(cls, InfschedError):
                    yield Raise(file, function, cls.__name__, line)


def unlisted_and_stale(
    allowed: list[Allowed], found: list[Raise]
) -> tuple[list[str], list[Allowed]]:
    """The raises no row allows, and the rows no raise matches."""
    unlisted = [
        f"{r.file}:{r.line} {r.function} raises {r.exception}"
        for r in found
        if not any(a.matches(r) for a in allowed)
    ]
    return unlisted, [a for a in allowed if not any(a.matches(r) for r in found)]


def test_every_raise_is_in_the_tree_or_allowlisted() -> None:
    unlisted, stale = unlisted_and_stale(
        allowlist(API_DOC.read_text()), list(raises_outside_the_tree(SOURCES, ROOT))
    )
    assert not unlisted, (
        "raises outside the InfschedError tree, not in docs/api.md's allowlist "
        "(raise an InfschedError subclass, or add a row saying why not):\n" + "\n".join(unlisted)
    )
    assert not stale, f"allowlist rows no raise matches any more: {stale}"


SAMPLE = """
from infsched.errors import ConfigError


def _bad(value: object) -> ValueError:
    return ValueError(value)


class Store:
    def _refused(self) -> KeyError:
        return KeyError("x")

    def add(self, value: int) -> None:
        if value < 0:
            raise ValueError("negative")
        if value == 0:
            raise self._refused()
        if value == 1:
            raise ConfigError("one")
        try:
            int("x")
        except ValueError as exc:
            raise exc


def check(value: int) -> None:
    if value > 9:
        raise _bad(value)
    raise NotImplementedError
"""


def test_the_scan_finds_each_builtin_raise_and_nothing_else(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    package = tmp_path / "scanned_sample"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "store.py").write_text(SAMPLE)
    monkeypatch.syspath_prepend(str(tmp_path))
    found = {(r.function, r.exception) for r in raises_outside_the_tree([package], tmp_path)}
    assert found == {
        ("Store.add", "ValueError"),
        ("Store.add", "KeyError"),
        ("check", "ValueError"),
        ("check", "NotImplementedError"),
    }
    allowed = allowlist(
        f"{ALLOWLIST_HEADING}\n\n| file | function | exception | why |\n| --- | --- | --- | --- |\n"
        "| `scanned_sample/store.py` | `*` | `ValueError` | the sample's |\n\n## Next\n"
    )
    assert allowed == [Allowed("scanned_sample/store.py", "*", "ValueError")]
    raises = list(raises_outside_the_tree([package], tmp_path))
    unlisted, stale = unlisted_and_stale(
        [*allowed, Allowed("scanned_sample/store.py", "gone", "TypeError")], raises
    )
    assert [text.split(" ", 1)[1] for text in unlisted] == [
        "Store.add raises KeyError",
        "check raises NotImplementedError",
    ]
    assert stale == [Allowed("scanned_sample/store.py", "gone", "TypeError")]


@pytest.mark.parametrize(
    ("name", "builtin"),
    [
        ("InvalidArgumentError", ValueError),
        ("InvalidNameError", ValueError),
        ("NaiveDatetimeError", ValueError),
        ("UnsupportedDatabaseError", ValueError),
        ("MetricMismatchError", ValueError),
        ("SchedulerStateError", RuntimeError),
        ("TruncatedResultError", RuntimeError),
        ("IdClockRangeError", OverflowError),
    ],
)
def test_each_error_that_replaced_a_builtin_is_still_one(name: str, builtin: type) -> None:
    # Callers that caught the built-in before keep working.
    cls = getattr(importlib.import_module("infsched.errors"), name)
    assert issubclass(cls, InfschedError)
    assert issubclass(cls, builtin)


def _subclasses(cls: type[BaseException]) -> Iterator[type[BaseException]]:
    for sub in cls.__subclasses__():
        yield sub
        yield from _subclasses(sub)


def test_the_tree_in_the_docs_is_the_tree_of_the_core() -> None:
    core = SOURCES[0]
    for path in sorted(core.rglob("*.py")):
        importlib.import_module(module_name(path, core))
    defined = {
        c.__name__: c for c in _subclasses(InfschedError) if c.__module__.startswith("infsched.")
    }
    text = API_DOC.read_text().split("### The tree", 1)[1].split("```text", 1)[1].split("```", 1)[0]
    drawn: dict[str, str] = {}  # each class drawn, with the class it is drawn under
    parents: list[tuple[int, str]] = []  # (column, name) of the classes above this line
    for line in text.strip().splitlines():
        match = re.search(r"\w+Error", line)
        assert match is not None, line
        while parents and parents[-1][0] >= match.start():
            parents.pop()
        if parents:
            drawn[match.group()] = parents[-1][1]
        parents.append((match.start(), match.group()))
    assert set(drawn) == set(defined)
    for name, parent in drawn.items():
        assert parent in [base.__name__ for base in defined[name].__bases__], (name, parent)


def test_the_replaced_builtins_raise_their_classes() -> None:
    with pytest.raises(NaiveDatetimeError, match=r"^when is a naive datetime"):
        require_utc(datetime(2025, 1, 1), "when")
    with pytest.raises(InvalidNameError, match="is invalid: use a letter"):
        check_name("1st", "repository name")
    with pytest.raises(InvalidArgumentError, match=r"RetryPolicy.base_delay: 0 must be > 0"):
        RetryPolicy(base_delay=0)
    with pytest.raises(InvalidArgumentError, match=r"ExecutorSpec\.max_attempts"):
        ExecutorSpec(name="x", factory=lambda section: RecordingExecutor(), max_attempts=0)
    with pytest.raises(InvalidArgumentError, match="id node must be an integer"):
        IdGenerator(node=-1)
    with pytest.raises(IdClockRangeError, match="outside the id range"):
        IdGenerator(node=0, now_ms=lambda: 0).next_id()
    with pytest.raises(InvalidArgumentError, match="log sink interval"):
        LogMetricsSink(interval=0)


class _StrictPlugin:
    """An executor whose factory refuses a value of its [plugins.strict] table."""

    @hookimpl
    def register_executors(self) -> list[ExecutorSpec]:
        return [ExecutorSpec(name="strict", factory=self.make)]

    @staticmethod
    def make(section: Mapping[str, Any]) -> RecordingExecutor:
        float(section.get("speed", 1.0))  # "fast": ValueError, as plugins' own code does
        return RecordingExecutor()


def test_a_value_an_executor_factory_refuses_is_a_config_error_naming_its_table(
    sqlite_url: DatabaseUrl,
) -> None:
    plugins = load_plugins()
    plugins.register(_StrictPlugin(), "strict")
    binding = RepositoryBinding(repository_for(sqlite_url), executor="strict")
    config = SchedulerConfig(database_url=sqlite_url, plugins={"strict": {"speed": "fast"}})
    with pytest.raises(ConfigError, match=r"^\[plugins.strict\]: could not convert string"):
        InfiniteScheduler([binding], config, plugins=plugins)
    config = SchedulerConfig(database_url=sqlite_url, plugins={"strict": {"speed": 2}})
    scheduler = InfiniteScheduler([binding], config, plugins=plugins)
    with scheduler, pytest.raises(SchedulerStateError, match="already started"):
        scheduler.start()
