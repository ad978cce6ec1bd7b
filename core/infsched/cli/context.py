"""What every command shares: the plugins, and the config read from file, env and flags."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import attrs
import click

from infsched.config import LoadedConfig, load_config
from infsched.plugins import PluginRegistry

F = TypeVar("F", bound=Callable[..., Any])


@attrs.define
class AppContext:
    """Held in click's context object; loads the config only when a command asks."""

    plugins: PluginRegistry
    config_path: Path | None = None
    flags: dict[str, Any] = attrs.Factory(dict)
    _loaded: LoadedConfig | None = None

    def loaded(self) -> LoadedConfig:
        if self._loaded is None:
            self._loaded = load_config(self.config_path, flags=self.flags)
        return self._loaded


config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file [default: ./infsched.toml when present].",
)
db_option = click.option(
    "--db",
    "database_url",
    default=None,
    metavar="URL",
    help="Database URL, e.g. mysql+pymysql://user:pass@host:3306/db [default: sqlite:///./infsched.db].",
)


def record_config_flags(config_path: Path | None, database_url: str | None) -> None:
    """Keep ``--config``/``--db`` for `AppContext.loaded`; given again later, the later one wins."""
    app = click.get_current_context().find_object(AppContext)
    if app is None:  # the bare `cli` group run without main(): nothing to record into
        return
    if config_path is not None:
        app.config_path = config_path
    if database_url is not None:
        app.flags["database_url"] = database_url


def config_options(fn: F) -> F:
    """Add ``--config`` and ``--db`` to a command and record them for `AppContext.loaded`."""

    @config_option
    @db_option
    @functools.wraps(fn)
    def wrapper(
        *args: Any, config_path: Path | None, database_url: str | None, **kwargs: Any
    ) -> Any:
        record_config_flags(config_path, database_url)
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def requires_plugins(fn: F) -> F:
    """Refuse to run unless every plugin loaded and none conflict."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        app = click.get_current_context().find_object(AppContext)
        assert app is not None
        app.plugins.require_healthy()
        return fn(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def app_context() -> AppContext:
    app = click.get_current_context().find_object(AppContext)
    assert app is not None, "commands run under the infsched root group"
    return app
