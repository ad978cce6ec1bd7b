"""SchedulerConfig and the layers it is read from.

Precedence, later wins: defaults < TOML file < ``INFSCHED_*`` environment
variables < command-line flags.  Every value is validated when the frozen
`SchedulerConfig` is built, and an error names the field, the value and what
is allowed.  The database password never appears in any of it.
"""

from __future__ import annotations

import difflib
import enum
import os
import socket
import tomllib
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any, TypeVar

import attrs

# Registers the built-in dialects, so that their URLs are accepted (infsched.dburl).
import infsched.dialects  # noqa: F401
from infsched.dburl import DEFAULT_SQLITE_URL, DatabaseUrl
from infsched.errors import ConfigError, ScheduleError
from infsched.flow_limits import Limit, LimitError, limit_from_table
from infsched.names import check_name
from infsched.schedules import Schedule
from infsched.schema import MAX_NODE_ID

DEFAULT_CONFIG_FILE = Path("infsched.toml")
ENV_PREFIX = "INFSCHED_"
#: Plugins left out, and the only plugins loaded (comma-separated names; see plugins.py).
DISABLE_PLUGINS_ENV = "INFSCHED_DISABLE_PLUGINS"
LOAD_PLUGINS_ENV = "INFSCHED_LOAD_PLUGINS"
#: ``INFSCHED_TRACE_HOOKS=1``: log every hook implementation's call and duration (plugins.py).
TRACE_HOOKS_ENV = "INFSCHED_TRACE_HOOKS"
#: ``INFSCHED_*`` variables that are no config field but are read by another part.
PLUGIN_VARIABLES = (DISABLE_PLUGINS_ENV, LOAD_PLUGINS_ENV, TRACE_HOOKS_ENV)
#: The test suite's own settings (e.g. INFSCHED_TEST_MYSQL_URL), never read by the scheduler.
TEST_VARIABLE_PREFIX = "INFSCHED_TEST_"


class MisfirePolicy(enum.Enum):
    """What a job whose due time passed longer than misfire_threshold ago does."""

    FIRE_ONCE_NOW = "fire_once_now"
    DO_NOTHING = "do_nothing"


def default_node_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


# -- converters: each takes the raw value and the field, so errors can name it --


def _bad(field: attrs.Attribute[Any], value: object, allowed: str) -> ConfigError:
    return ConfigError(f"{field.name}: {value!r} is invalid; {allowed}")


def _number(value: object, field: attrs.Attribute[Any]) -> float:
    if isinstance(value, bool):
        raise _bad(field, value, "expected a number of seconds")
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value.strip())
        except ValueError:
            raise _bad(field, value, "expected a number of seconds") from None
    raise _bad(field, value, "expected a number of seconds")


def _integer(value: object, field: attrs.Attribute[Any]) -> int:
    if isinstance(value, bool):
        raise _bad(field, value, "expected a whole number")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            raise _bad(field, value, "expected a whole number") from None
    raise _bad(field, value, "expected a whole number")


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _boolean(value: object, field: attrs.Attribute[Any]) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise _bad(field, value, "expected true or false")


def env_flag(env: Mapping[str, str], variable: str) -> bool:
    """An on/off variable read outside the config: unset or empty is off; else ConfigError."""
    raw = env.get(variable, "").strip().lower()
    if raw in _TRUE | _FALSE or raw == "":
        return raw in _TRUE
    raise ConfigError(
        f"{variable}={env[variable]!r}: expected 1, true, yes, on or 0, false, no, off"
    )


def _misfire(value: object, field: attrs.Attribute[Any]) -> MisfirePolicy:
    if isinstance(value, MisfirePolicy):
        return value
    allowed = ", ".join(p.value for p in MisfirePolicy)
    if isinstance(value, str):
        try:
            return MisfirePolicy(value.strip().lower())
        except ValueError:
            pass
    raise _bad(field, value, f"allowed: {allowed}")


def _text(value: object, field: attrs.Attribute[Any]) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _bad(field, value, "expected a non-empty string")
    return value.strip()


def _sections(value: object, field: attrs.Attribute[Any]) -> Mapping[str, Mapping[str, Any]]:
    if not isinstance(value, Mapping):
        raise _bad(field, value, "expected a table of plugin sections, e.g. [plugins.sms]")
    out: dict[str, Mapping[str, Any]] = {}
    for name, section in value.items():
        if not isinstance(section, Mapping):
            raise ConfigError(f"{field.name}.{name}: expected a table, got {section!r}")
        out[str(name)] = MappingProxyType(dict(section))
    return MappingProxyType(out)


# -- converters for the fields that take a string in Python too --


def to_misfire_policy(value: str | MisfirePolicy) -> MisfirePolicy:
    return _misfire(value, attrs.fields(SchedulerConfig).misfire_policy)


def to_database_url(value: str | Sequence[str] | DatabaseUrl) -> DatabaseUrl:
    """One URL, or a list of a replicated database's members' URLs (in the order tried).

    A string of several URLs separated by spaces is a list too, for the environment
    and the command line (a URL holds no unescaped space).
    """
    if isinstance(value, DatabaseUrl):
        return value
    if isinstance(value, str):
        parts = value.split()
        return DatabaseUrl(value) if len(parts) <= 1 else DatabaseUrl.members(parts)
    if isinstance(value, Sequence) and all(isinstance(v, str) for v in value):
        return DatabaseUrl.members(list(value))
    raise ConfigError(
        f"database_url: expected a URL string or a list of them, got {type(value).__name__}"
    )


def to_sections(value: Mapping[str, Mapping[str, Any]]) -> Mapping[str, Mapping[str, Any]]:
    return _sections(value, attrs.fields(SchedulerConfig).plugins)


def _sections_repr(sections: Mapping[str, Mapping[str, Any]]) -> str:
    # Plugin sections hold credentials (smtp_password, API keys): repr names keys, never values.
    shown = (f"{name}: {', '.join(section) or '-'}" for name, section in sections.items())
    return "<" + ("; ".join(shown) or "none") + ">"


# -- validators: each names the field, the value and what is allowed --


def _number_value(field: attrs.Attribute[Any], value: object) -> float:
    # Only files and the environment are coerced (see `coerce`); in Python the field is a number.
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(field, value, "expected a number of seconds")
    return value


def _positive_number(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not _number_value(field, value) > 0:
        raise _bad(field, value, "must be greater than 0")


def _non_negative_number(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not _number_value(field, value) >= 0:
        raise _bad(field, value, "must be 0 or greater")


def _positive_integer(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(field, value, "expected a whole number")
    if value < 1:
        raise _bad(field, value, "must be 1 or greater")


def _boolean_value(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        raise _bad(field, value, "expected true or false")


def _text_value(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    _text(value, field)


def _node_id_value(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    text = _text(value, field)
    # The job table's owner column is CHAR(MAX_NODE_ID), which drops trailing spaces.
    if text != value or len(text) > MAX_NODE_ID:
        raise _bad(
            field, value, f"expected at most {MAX_NODE_ID} characters, without surrounding spaces"
        )


#: The job store a node uses unless `job_store` names another (the built-in).
DEFAULT_JOB_STORE = "sql"


def _job_store_value(inst: object, field: attrs.Attribute[Any], value: object) -> None:
    text = _text(value, field)
    try:
        check_name(text, "job_store")
    except ValueError as exc:
        raise ConfigError(f"job_store: {exc}") from None


def to_sink_names(value: str | Sequence[str]) -> tuple[str, ...]:
    """Sink names from a list or a comma-separated string (the environment's form)."""
    items = value.split(",") if isinstance(value, str) else list(value)
    names = []
    for item in items:
        if not isinstance(item, str):
            raise ConfigError(f"metrics_sinks: {item!r} is invalid; expected sink names")
        if item.strip():
            try:
                names.append(check_name(item.strip(), "metrics_sinks entry"))
            except ValueError as exc:
                raise ConfigError(f"metrics_sinks: {exc}") from None
    return tuple(names)


# -- repositories: ``[[repositories]]`` tables --


def _repository_text(where: str, key: str, value: object) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}.{key}: {value!r} is invalid; expected a non-empty string")
    return value.strip()


def _repository_name(where: str, key: str, value: object) -> str:
    try:
        return check_name(_repository_text(where, key, value), f"{where}.{key}")
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _repository_days(where: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"{where}.{key}: {value!r} is invalid; expected a whole number >= 0")
    return value


def _repository_int(where: str, key: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{where}.{key}: {value!r} is invalid; expected a whole number")
    return value


def _repository_url(where: str, key: str, value: object) -> DatabaseUrl:
    if isinstance(value, DatabaseUrl):
        return value
    try:
        if isinstance(value, (str, list)):
            return to_database_url(value)
    except ConfigError as exc:
        raise ConfigError(f"{where}.{exc}") from None
    raise ConfigError(f"{where}.{key}: expected a URL string, got {type(value).__name__}")


@attrs.frozen(kw_only=True)
class RepositoryConfig:
    """One ``[[repositories]]`` table: a repository of entities and the executor they go to."""

    #: The repository's name; also its table prefix (multi_table) or table (partitioned).
    name: str
    #: The entity type's class name, as a plugin registered it (e.g. ``SmsEntity``).
    entity: str
    #: The executor the entities' jobs go to.
    executor: str
    #: ``multi_table`` or ``partitioned`` (or a plugin's); None picks ``partitioned`` on
    #: MySQL/MariaDB and PostgreSQL, ``multi_table`` on SQLite.
    backend: str | None = None
    #: Table prefix or table name, when it should differ from `name`.
    table: str | None = None
    retention_days: int = 7
    precreate_days: int = 2
    #: The repository's database; None means the config's database_url.
    database_url: DatabaseUrl | None = None
    #: Job priority of entities that have no ``priority`` field of their own.
    priority: int = 0
    #: The entity field whose value is each job's flow key (docs/flow-control.md).
    flow_key: str | None = None

    def __str__(self) -> str:
        return f"{self.name} ({self.entity} -> {self.executor}, {self.backend or 'auto'})"


#: How each key of a ``[[repositories]]`` table is checked and converted.
_REPOSITORY_KEYS: dict[str, Callable[[str, str, object], Any]] = {
    "name": _repository_name,
    "entity": _repository_text,
    "executor": _repository_name,
    "backend": _repository_name,
    "table": _repository_name,
    "retention_days": _repository_days,
    "precreate_days": _repository_days,
    "database_url": _repository_url,
    "priority": _repository_int,
    "flow_key": _repository_text,
}
_REQUIRED_REPOSITORY_KEYS = ("name", "entity", "executor")


def _repository(index: int, raw: object) -> RepositoryConfig:
    where = f"repositories[{index}]"
    if isinstance(raw, RepositoryConfig):
        return raw
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a table ([[repositories]]), got {raw!r}")
    if isinstance(raw.get("name"), str):
        where = f"repositories.{raw['name']}"
    for key in raw:
        if key not in _REPOSITORY_KEYS:
            hint = difflib.get_close_matches(str(key), list(_REPOSITORY_KEYS), n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(
                f"unknown key {key!r} in {where}{suggestion} "
                f"(known keys: {', '.join(_REPOSITORY_KEYS)})"
            )
    for key in _REQUIRED_REPOSITORY_KEYS:
        if key not in raw:
            raise ConfigError(f"{where}: {key!r} is required")
    values = {key: _REPOSITORY_KEYS[key](where, key, value) for key, value in raw.items()}
    return RepositoryConfig(**values)


def to_repositories(value: object) -> tuple[RepositoryConfig, ...]:
    """``[[repositories]]`` tables (or RepositoryConfig values), checked; names must differ."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"repositories: {value!r} is invalid; expected [[repositories]] tables")
    found = tuple(_repository(i, raw) for i, raw in enumerate(value))
    names = [r.name for r in found]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(f"repositories: two repositories are named {name!r}")
    return found


# -- schedules: ``[[schedules]]`` tables --


def to_schedules(value: object) -> tuple[Schedule, ...]:
    """``[[schedules]]`` tables (or Schedule values), checked; names must differ.

    Each table is a schedule's plain definition (`Schedule.from_definition`),
    so its errors name the schedule and the key, as ``schedules add`` does.
    """
    if not isinstance(value, list | tuple):
        raise ConfigError(f"schedules: {value!r} is invalid; expected [[schedules]] tables")
    found = tuple(
        raw if isinstance(raw, Schedule) else Schedule.from_definition(raw, f"schedules[{i}]")
        for i, raw in enumerate(value)
    )
    names = [s.name for s in found]
    for name in names:
        if names.count(name) > 1:
            raise ScheduleError(f"schedules: two schedules are named {name!r}")
    return found


# -- flow limits: ``[[limits]]`` tables --


def to_limits(value: object) -> tuple[Limit, ...]:
    """``[[limits]]`` tables (or Limit values), checked; one limit per target."""
    if not isinstance(value, list | tuple):
        raise ConfigError(f"limits: {value!r} is invalid; expected [[limits]] tables")
    found = tuple(
        raw if isinstance(raw, Limit) else limit_from_table(f"limits[{i}]", raw)
        for i, raw in enumerate(value)
    )
    targets = [limit.target.id for limit in found]
    for target in targets:
        if targets.count(target) > 1:
            raise LimitError(f"limits: {target} is limited twice")
    return found


def describe_schedule(schedule: Schedule) -> str:
    """A schedule in a few words: ``nightly (cron '30 2 * * *' Europe/Berlin -> report)``."""
    return f"{schedule.name} ({schedule.describe_trigger()} {schedule.zone} -> {schedule.executor})"


@attrs.frozen(kw_only=True)
class SchedulerConfig:
    """Everything a scheduler node needs to know; immutable once built."""

    #: Seconds between fetch cycles of one repository.
    fetch_interval: float = attrs.field(default=25.0, validator=_positive_number)
    #: Seconds ahead of now that entities are moved into the job store.
    lookahead_window: float = attrs.field(default=30.0, validator=_positive_number)
    #: Upper bound of entities one fetch cycle moves; a full cycle is followed at once by another.
    max_jobs_per_fetch: int = attrs.field(default=10_000, validator=_positive_integer)
    #: Rows per multi-row statement and per transaction on the hot path.
    batch_size: int = attrs.field(default=1000, validator=_positive_integer)
    #: Batches one repository's fetch cycle moves at once, each in its own transaction,
    #: when more than one batch is waiting (MySQL/MariaDB; always 1 on SQLite).
    fetch_connections: int = attrs.field(default=2, validator=_positive_integer)
    #: Threads running executors on this node.
    thread_pool_size: int = attrs.field(default=20, validator=_positive_integer)
    #: What a job claimed more than misfire_threshold after its due time does.
    misfire_policy: MisfirePolicy = attrs.field(
        default=MisfirePolicy.FIRE_ONCE_NOW, converter=to_misfire_policy
    )
    #: Seconds of lateness after which a job counts as misfired.
    misfire_threshold: float = attrs.field(default=60.0, validator=_non_negative_number)
    #: Whether several nodes share the database (leases, heartbeats).
    clustering: bool = attrs.field(default=False, validator=_boolean_value)
    #: This node's name in the cluster.
    node_id: str = attrs.field(factory=default_node_id, validator=_node_id_value)
    #: Seconds between a node's heartbeats.
    heartbeat_interval: float = attrs.field(default=5.0, validator=_positive_number)
    #: Seconds a claimed job stays leased to its node without renewal; after a node dies,
    #: its jobs run elsewhere once this has passed.
    job_lease: float = attrs.field(default=30.0, validator=_positive_number)
    #: Seconds before the first retry of a failed job; each further retry waits twice as long.
    retry_base_delay: float = attrs.field(default=2.0, validator=_positive_number)
    #: The longest wait between two attempts, in seconds.
    retry_max_delay: float = attrs.field(default=300.0, validator=_positive_number)
    #: Days the outcome history keeps (one table or partition a day).
    history_retention_days: int = attrs.field(default=7, validator=_positive_integer)
    #: The job store's database; repositories default to it too.
    database_url: DatabaseUrl = attrs.field(
        default=DatabaseUrl(DEFAULT_SQLITE_URL), converter=to_database_url
    )
    #: The job store by name: ``sql`` (built in) or one a plugin registers.
    job_store: str = attrs.field(default=DEFAULT_JOB_STORE, validator=_job_store_value)
    #: Plugin configuration sections, ``[plugins.NAME]`` in TOML.
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(
        factory=dict, converter=to_sections, repr=_sections_repr
    )
    #: Metrics sinks by name (``log``, or a plugin's); each reads ``[plugins.NAME]``.
    metrics_sinks: tuple[str, ...] = attrs.field(default=("log",), converter=to_sink_names)
    #: The repositories this node serves, ``[[repositories]]`` in TOML.
    repositories: tuple[RepositoryConfig, ...] = attrs.field(
        factory=tuple, converter=to_repositories
    )
    #: Recurring schedules, ``[[schedules]]`` in TOML; a node puts them in the database
    #: when it starts (source ``config``).
    schedules: tuple[Schedule, ...] = attrs.field(factory=tuple, converter=to_schedules)
    #: Flow limits, ``[[limits]]`` in TOML; a node puts them in the database when it
    #: starts (source ``config``), where `infsched limits set` has not overridden them.
    limits: tuple[Limit, ...] = attrs.field(factory=tuple, converter=to_limits)

    @lookahead_window.validator
    def _lookahead_beyond_interval(self, field: attrs.Attribute[float], value: float) -> None:
        if value <= self.fetch_interval:
            raise ConfigError(
                f"lookahead_window: {value:g} is invalid; it must be greater than "
                f"fetch_interval ({self.fetch_interval:g}), or entities due between two "
                "fetch cycles would be fetched late"
            )

    @job_lease.validator
    def _lease_beyond_heartbeat(self, field: attrs.Attribute[float], value: float) -> None:
        if value <= 2 * self.heartbeat_interval:
            raise ConfigError(
                f"job_lease: {value:g} is invalid; it must be more than twice "
                f"heartbeat_interval ({self.heartbeat_interval:g}), or a live node's leases "
                "could expire between renewals"
            )

    def plugin_section(self, name: str) -> Mapping[str, Any]:
        return self.plugins.get(name, MappingProxyType({}))


T = TypeVar("T")


def from_plugin_section(
    section_name: str, factory: Callable[[Mapping[str, Any]], T], section: Mapping[str, Any]
) -> T:
    """`factory(section)`, a value it refuses reported as the one line the CLI prints.

    A plugin's factory reads its ``[plugins.NAME]`` table itself, and a bad value
    there (``interval = 0``, ``interval = "abc"``) comes out of it as a ValueError or
    TypeError; the user needs to know which table it is in.
    """
    try:
        return factory(section)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"[plugins.{section_name}]: {exc}") from exc


#: How a value read from a file or the environment becomes the field's type.
_COERCE: dict[str, Callable[[object, attrs.Attribute[Any]], Any]] = {
    "fetch_interval": _number,
    "lookahead_window": _number,
    "max_jobs_per_fetch": _integer,
    "batch_size": _integer,
    "fetch_connections": _integer,
    "thread_pool_size": _integer,
    "misfire_threshold": _number,
    "clustering": _boolean,
    "node_id": _text,
    "heartbeat_interval": _number,
    "job_lease": _number,
    "retry_base_delay": _number,
    "retry_max_delay": _number,
    "history_retention_days": _integer,
    "job_store": _text,
}


def coerce(name: str, value: object) -> Any:
    """Turn a raw value (a TOML value, an environment string) into field `name`'s type."""
    convert = _COERCE.get(name)
    if convert is None:
        return value
    return convert(value, getattr(attrs.fields(SchedulerConfig), name))


FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in attrs.fields(SchedulerConfig))

#: Extra names accepted for a field, in files and the environment.
_ALIASES = {"db": "database_url"}
#: Command-line flags whose name differs from their field.
_FLAGS = {"database_url": "--db"}


@attrs.frozen
class LoadedConfig:
    """A config and, for each field, where its value came from."""

    config: SchedulerConfig
    sources: Mapping[str, str]
    file: Path | None


def _unknown_key(key: str, where: str) -> ConfigError:
    hint = difflib.get_close_matches(key, [*FIELD_NAMES, *_ALIASES], n=1)
    suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
    return ConfigError(
        f"unknown config key {key!r} in {where}{suggestion} (known keys: {', '.join(FIELD_NAMES)})"
    )


def read_toml(path: Path) -> dict[str, Any]:
    """Read a config file's keys, refusing unknown ones."""
    try:
        with path.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
    values: dict[str, Any] = {}
    spelled: dict[str, str] = {}
    for key, value in data.items():
        name = _ALIASES.get(key, key)
        if name not in FIELD_NAMES:
            raise _unknown_key(key, str(path))
        if name in spelled:
            raise _set_twice(name, spelled[name], key, f"config file {path}")
        values[name] = value
        spelled[name] = key
    return values


def _set_twice(name: str, first: str, second: str, where: str) -> ConfigError:
    # Which of two spellings wins would depend on their order: neither does.
    return ConfigError(f"{where} sets {name} twice, as {first} and as {second}; keep one of them")


#: Fields that are TOML tables, with no one-string form for the environment.
_TABLE_FIELDS = {
    "plugins": "[plugins.NAME]",
    "repositories": "[[repositories]]",
    "schedules": "[[schedules]]",
    "limits": "[[limits]]",
}


def env_variables() -> dict[str, str]:
    """{variable: field} of every ``INFSCHED_*`` variable that sets a config field."""
    names = {
        f"{ENV_PREFIX}{name.upper()}": name for name in FIELD_NAMES if name not in _TABLE_FIELDS
    }
    names.update({f"{ENV_PREFIX}{alias.upper()}": name for alias, name in _ALIASES.items()})
    return names


def _read_elsewhere(var: str) -> bool:
    return var in PLUGIN_VARIABLES or var.startswith(TEST_VARIABLE_PREFIX)


def _unknown_variable(var: str, names: Mapping[str, str]) -> ConfigError:
    table = var[len(ENV_PREFIX) :].lower()
    if table in _TABLE_FIELDS:
        return ConfigError(
            f"{var}: {table} is set only in the config file ({_TABLE_FIELDS[table]} tables), "
            "not in the environment"
        )
    known = sorted([*names, *PLUGIN_VARIABLES])
    hint = difflib.get_close_matches(var, known, n=1)
    suggestion = f"; did you mean {hint[0]}?" if hint else ""
    return ConfigError(
        f"unknown environment variable {var}{suggestion} (known: {', '.join(known)})"
    )


def read_env(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """The fields set in the environment, as {field: (value, variable)}.

    Any other non-empty ``INFSCHED_*`` variable is refused (a misspelt one
    would otherwise be ignored), except the plugin variables and the test
    suite's ``INFSCHED_TEST_*``, which belong to other parts.  Two spellings
    of one field (``INFSCHED_DB`` and ``INFSCHED_DATABASE_URL``) are refused too.
    """
    found: dict[str, tuple[str, str]] = {}
    names = env_variables()
    for var in sorted(env):
        unknown = var.startswith(ENV_PREFIX) and var not in names and not _read_elsewhere(var)
        if unknown and env[var] != "":
            raise _unknown_variable(var, names)
    for var, name in names.items():
        if var in env and env[var] != "":
            if name in found:
                raise _set_twice(name, found[name][1], var, "the environment")
            found[name] = (env[var], var)
    return found


def load_config(
    path: Path | None = None,
    env: Mapping[str, str] | None = None,
    flags: Mapping[str, Any] | None = None,
) -> LoadedConfig:
    """Build the effective config from file, environment and flags.

    `path` None means ``./infsched.toml`` when it exists; a given path must exist.
    `flags` maps field names to values; None values are ignored.
    """
    env = os.environ if env is None else env
    values: dict[str, Any] = {}
    sources = dict.fromkeys(FIELD_NAMES, "default")

    file = (
        path
        if path is not None
        else (DEFAULT_CONFIG_FILE if DEFAULT_CONFIG_FILE.is_file() else None)
    )
    if file is not None:
        for name, value in read_toml(file).items():
            values[name] = value
            sources[name] = f"file {file}"
    for name, (value, var) in read_env(env).items():
        values[name] = value
        sources[name] = f"env {var}"
    for name, value in (flags or {}).items():
        if value is None:
            continue
        if name not in FIELD_NAMES:
            raise _unknown_key(name, "command-line flags")
        values[name] = value
        sources[name] = f"flag {_FLAGS.get(name, '--' + name.replace('_', '-'))}"
    coerced = {name: coerce(name, value) for name, value in values.items()}
    return LoadedConfig(config=SchedulerConfig(**coerced), sources=sources, file=file)


def read_config(path: str | os.PathLike[str] | None = None) -> SchedulerConfig:
    """The configuration as every ``infsched`` command reads it, without flags.

    `path` None reads ``./infsched.toml`` when it exists (else the defaults);
    ``INFSCHED_*`` environment variables override the file.  Raises ConfigError,
    naming the key, for anything invalid.
    """
    return load_config(None if path is None else Path(path)).config


def _item(value: object) -> str:
    return describe_schedule(value) if isinstance(value, Schedule) else str(value)


def describe(loaded: LoadedConfig) -> list[tuple[str, str, str]]:
    """(key, printable value, source) rows; the database password is hidden."""
    rows: list[tuple[str, str, str]] = []
    for name in FIELD_NAMES:
        value = getattr(loaded.config, name)
        if isinstance(value, enum.Enum):
            shown = str(value.value)
        elif isinstance(value, Mapping):
            shown = ", ".join(sorted(value)) or "(none)"
        elif isinstance(value, tuple):
            shown = "; ".join(_item(v) for v in value) or "(none)"
        else:
            shown = str(value)
        rows.append((name, shown, loaded.sources[name]))
    return rows
