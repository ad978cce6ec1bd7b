"""How commands print: nothing cut or wrapped off a terminal, JSON on request.

Everything a command prints goes through `stdout()`/`stderr()` so that a
job key printed to a pipe or a log file stays on one line (`grep KEY` must
find it), and through `print_json` under ``--json`` so that every time
carries its UTC offset.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from enum import Enum
from typing import Any

import click
from rich.console import Console
from rich.text import Text

# Off a terminal rich would assume 80 columns and fold or cut what is wider.
# Tables and text take only the width they need, so a wide page costs nothing.
_UNLIMITED = 1_000_000


def _console(*, stderr: bool) -> Console:
    probe = Console(stderr=stderr)
    if probe.is_terminal:
        return Console(stderr=stderr, highlight=False)
    return Console(stderr=stderr, highlight=False, soft_wrap=True, width=_UNLIMITED)


def stdout() -> Console:
    """The console for a command's output."""
    return _console(stderr=False)


def stderr() -> Console:
    """The console for progress and errors."""
    return _console(stderr=True)


def plain(value: Any) -> Any:
    """A value as JSON holds it: aware ISO-8601 times (a naive one is UTC), enums by value."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=UTC)
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    return str(value)


def note(text: str) -> None:
    """A progress line on stderr: the time (UTC, with its offset), then `text`, as it is.

    Not ``Console.log``: its layout pads every line to the console's width, which
    off a terminal is unlimited.
    """
    at = datetime.now(UTC).isoformat(sep=" ", timespec="seconds")
    stderr().print(Text(f"{at} {text}"))


def counted(count: int, noun: str, plural: str | None = None) -> str:
    """``1 node``, ``2 nodes``: a count with its noun in the number it takes."""
    return f"{count} {noun if count == 1 else plural or noun + 's'}"


def json_text(data: Any) -> str:
    return json.dumps(data, indent=2, default=plain, ensure_ascii=False)


def print_json(data: Any) -> None:
    click.echo(json_text(data))


def wants_json(argv: list[str]) -> bool:
    """Whether a command line asks for JSON; read from the words, so usage errors obey it too."""
    words = argv[: argv.index("--")] if "--" in argv else argv
    return "--json" in words


def error_text(message: str, *, as_json: bool) -> str:
    """One line for an error: ``error: …``, or a JSON object under ``--json``."""
    if as_json:
        return json.dumps({"error": message})
    return f"error: {message}"


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print JSON on stdout; an error is a JSON object on stderr.",
)
