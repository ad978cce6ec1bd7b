"""Every ```python block of the READMEs and docs/**/*.md runs, so no example can go stale.

Each block runs on its own: as a fresh module, in a temporary working
directory, with no ``INFSCHED_*`` variables set, so it must define or import
everything it uses (and use SQLite).  Two markers, on the line before a block,
change that, visibly in the document's source:

- ``<!-- file: PATH -->``: the block is the whole of the repository file PATH
  (a module of docs/examples/); it must equal that file, and runs with the
  file's package importable.
- ``<!-- not run: REASON -->``: the block is only compiled, never run; the
  reason says why (it needs something a test run does not have).

A block that defines ``test_*`` functions is a test module: after it runs,
each of them is called, with a fresh temporary directory for a ``tmp_path``
parameter, as pytest would.
"""

from __future__ import annotations

import inspect
import os
import re
import subprocess
import sys
import tempfile
import textwrap
import types
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [
    ROOT / "README.md",
    *sorted((ROOT / "docs").rglob("*.md")),
    *sorted(ROOT.glob("plugins/*/README.md")),
]

_OPEN = re.compile(r"^(?P<indent>[ \t]*)```(?:python|py)[ \t]*$")
_MARKER = re.compile(r"^\s*<!--\s*(?P<kind>file|not run):\s*(?P<value>.+?)\s*-->\s*$")


@attrs.frozen
class Example:
    """One ```python block: where it is, its code, and the marker before it, if any."""

    document: Path
    line: int  # of the opening fence, 1-based
    code: str
    marker: str | None = None
    value: str = ""

    @property
    def where(self) -> str:
        return f"{self.document.relative_to(ROOT)}:{self.line}"


def examples_in(document: Path) -> list[Example]:
    lines = document.read_text(encoding="utf-8").splitlines()
    found = []
    index = 0
    while index < len(lines):
        opening = _OPEN.match(lines[index])
        if opening is None:
            index += 1
            continue
        fence = opening["indent"] + "```"
        end = index + 1
        while end < len(lines) and lines[end].rstrip() != fence:
            end += 1
        if end == len(lines):
            raise AssertionError(f"{document.relative_to(ROOT)}:{index + 1}: unclosed ```python")
        previous = next((lines[i] for i in range(index - 1, -1, -1) if lines[i].strip()), "")
        marker = _MARKER.match(previous)
        code = textwrap.dedent("\n".join(lines[index + 1 : end])) + "\n"
        found.append(
            Example(
                document,
                index + 1,
                code,
                marker["kind"] if marker else None,
                marker["value"] if marker else "",
            )
        )
        index = end + 1
    return found


EXAMPLES = [example for document in DOCUMENTS for example in examples_in(document)]


def package_root(path: Path) -> Path:
    """The directory a module's top-level package sits in: what goes on sys.path."""
    directory = path.parent
    while (directory / "__init__.py").exists():
        directory = directory.parent
    return directory


@pytest.fixture
def isolated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary working directory, no INFSCHED_* variables, sys.path restored after."""
    monkeypatch.chdir(tmp_path)
    for var in [v for v in os.environ if v.startswith("INFSCHED_")]:
        monkeypatch.delenv(var)
    monkeypatch.setattr(sys, "path", list(sys.path))
    return tmp_path


def forget_modules_under(directory: Path) -> None:
    """Drop the modules imported from `directory`, so the next example imports them afresh.

    Only those: forgetting an infsched module would make a second copy of its
    classes on the next import, which isinstance checks elsewhere would refuse.
    """
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if file is not None and Path(file).is_relative_to(directory):
            del sys.modules[name]


def call_its_tests(module: types.ModuleType, directory: Path) -> None:
    """Call the ``test_*`` functions a block defines, as pytest would."""
    for name, value in list(vars(module).items()):
        if not (name.startswith("test_") and inspect.isfunction(value)):
            continue
        if value.__module__ != module.__name__:
            continue  # imported, not defined here
        parameters = list(inspect.signature(value).parameters)
        assert set(parameters) <= {"tmp_path"}, f"{name}: only tmp_path is provided"
        arguments = {"tmp_path": Path(tempfile.mkdtemp(dir=directory))} if parameters else {}
        value(**arguments)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.where for e in EXAMPLES])
def test_the_example_runs(example: Example, isolated: Path) -> None:
    compiled = compile(example.code, example.where, "exec")
    if example.marker == "not run":
        assert len(example.value) > 10, f"{example.where}: say why the block is not run"
        return
    if example.marker == "file":
        path = ROOT / example.value
        assert path.is_file(), f"{example.where}: no file {example.value}"
        assert example.code == path.read_text(encoding="utf-8"), (
            f"{example.where} differs from {example.value}; copy the file into the document"
        )
        sys.path.insert(0, str(package_root(path)))
    name = f"docs_example_{abs(hash(example.where))}"
    module = types.ModuleType(name)
    module.__file__ = str(isolated / "example.py")
    sys.modules[name] = module  # attrs and typing resolve the block's names through it
    try:
        exec(compiled, module.__dict__)
        call_its_tests(module, isolated)
    finally:
        del sys.modules[name]
        if example.marker == "file":
            forget_modules_under(package_root(ROOT / example.value))


def test_every_example_defines_or_imports_every_name_it_uses(tmp_path: Path) -> None:
    """Running misses a name used only in a function nobody calls; ruff's F821 does not."""
    for number, example in enumerate(EXAMPLES):
        (tmp_path / f"example_{number}.py").write_text(example.code)
    ruff = Path(sys.executable).with_name("ruff")
    found = subprocess.run(
        [
            str(ruff),
            "check",
            "--isolated",
            "--no-cache",
            "--select",
            "F821",
            "--output-format",
            "concise",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
    )
    undefined = []
    for line in found.stdout.splitlines():
        match = re.match(r".*example_(\d+)\.py:(\d+):\d+: (.*)", line)
        if match:
            example = EXAMPLES[int(match[1])]
            undefined.append(f"{example.where} (+{match[2]}): {match[3]}")
    assert not undefined, "\n".join(undefined)
    assert found.returncode == 0, found.stdout + found.stderr


def test_examples_are_found_with_their_markers() -> None:
    where = {e.where: e for e in EXAMPLES}
    assert len(EXAMPLES) >= 10, "the docs' ```python blocks are no longer found"
    assert "docs/api.md" in {str(e.document.relative_to(ROOT)) for e in EXAMPLES}
    markers = [e for e in EXAMPLES if e.marker]
    assert all(e.value for e in markers), where


def test_a_broken_block_fails_and_markers_are_read(tmp_path: Path) -> None:
    document = tmp_path / "doc.md"
    document.write_text(
        "text\n\n```python\nraise ValueError('stale')\n```\n\n"
        "<!-- not run: it needs a real SMS gateway -->\n  ```python\n  send()\n  ```\n"
        "```sh\nnot python\n```\n"
    )
    stale, skipped = (attrs.evolve(e, document=ROOT / "doc.md") for e in examples_in(document))
    assert (stale.line, stale.code, stale.marker) == (3, "raise ValueError('stale')\n", None)
    with pytest.raises(ValueError, match="stale"):
        exec(compile(stale.code, stale.where, "exec"), {})
    assert (skipped.marker, skipped.value, skipped.code) == (
        "not run",
        "it needs a real SMS gateway",
        "send()\n",
    )
