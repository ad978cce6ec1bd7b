"""Which schema revision a database is at, and bringing it to this code's (Alembic).

A database made by 0.1.0 has the scheduler's tables and no version table:
it is at the baseline revision. A database this code creates is stamped
with the head revision as its first table is made (`stamp_new`). Next to the
version the database keeps the oldest revision whose code may still run on
it (`infsched_schema_oldest_code`): a node older than the database knows
nothing of the newer revisions, so the database has to tell it.
"""

from __future__ import annotations

import functools
import io
import logging
from types import ModuleType
from typing import TYPE_CHECKING, Literal

import attrs
import sqlalchemy as sa
from sqlalchemy.schema import CreateTable

from infsched.dialects import Dialect, dialect_for
from infsched.errors import SchemaVersionError
from infsched.migrations import SCRIPT_LOCATION, VERSION_TABLE

if TYPE_CHECKING:
    from alembic.config import Config
    from alembic.script import Script, ScriptDirectory

OLDEST_CODE_TABLE = "infsched_schema_oldest_code"
#: A table every 0.1.0 database has (`db init`, any node): no version table beside it means 0.1.0.
BASELINE_MARK = "infsched_leases"

_metadata = sa.MetaData()
# Alembic's version table, declared as Alembic creates it, so a fresh database is stamped
# by the same INSERT IGNORE two starting nodes may race on.
versions = sa.Table(
    VERSION_TABLE,
    _metadata,
    sa.Column("version_num", sa.String(32), nullable=False),
    sa.PrimaryKeyConstraint("version_num", name=f"{VERSION_TABLE}_pkc"),
)
oldest_code = sa.Table(
    OLDEST_CODE_TABLE,
    _metadata,
    sa.Column("slot", sa.Integer(), primary_key=True, autoincrement=False),
    sa.Column("revision", sa.String(32), nullable=False),
)

Status = Literal["current", "behind", "ahead", "empty"]


@functools.cache
def _scripts() -> ScriptDirectory:
    # Alembic is imported on first use: importing it costs every command a seventh of a second.
    # Alembic logs its plugin set-up (on import) and each step at INFO: under `infsched
    # run`'s INFO logging that would bury a one-line refusal. A level the user set is kept.
    quiet = logging.getLogger("alembic")
    if quiet.level == logging.NOTSET:
        quiet.setLevel(logging.WARNING)
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(SCRIPT_LOCATION))


def _chain() -> list[Script]:
    """The revisions from the baseline to the head."""
    return list(reversed(list(_scripts().walk_revisions())))


def head() -> str:
    """The revision this code runs on."""
    return _chain()[-1].revision


def baseline() -> str:
    return _chain()[0].revision


def _module(revision: str) -> ModuleType | None:
    for script in _chain():
        if script.revision == revision:
            return script.module
    return None


def release_of(revision: str | None) -> str | None:
    """The release that brought `revision`; None for one this code does not know."""
    module = None if revision is None else _module(revision)
    return None if module is None else str(module.release)


def _oldest_code_for(revision: str) -> str:
    """The oldest revision whose code runs on a database at `revision`."""
    oldest = revision
    for script in reversed(_chain()[: [s.revision for s in _chain()].index(revision) + 1]):
        if script.revision != oldest or not script.module.older_code_compatible:
            break
        if script.down_revision is None:
            break
        oldest = str(script.down_revision)
    return oldest


@attrs.frozen
class SchemaState:
    """Where a database is against this code."""

    revision: str | None  # None: no scheduler tables at all
    release: str | None  # None: no tables, or a revision newer than this code knows
    head: str
    head_release: str
    status: Status
    recorded: bool  # False: a 0.1.0 database, which records no version
    oldest_code: str | None  # the oldest revision whose code may run on it, where recorded

    def as_dict(self) -> dict[str, object]:
        return attrs.asdict(self)


def current_revision(conn: sa.Connection) -> tuple[str | None, bool]:
    """The database's revision (None for no tables), and whether it was recorded."""
    inspector = sa.inspect(conn)
    if inspector.has_table(VERSION_TABLE):
        found = conn.execute(sa.select(versions.c.version_num)).scalars().all()
        if len(found) == 1:
            return str(found[0]), True
        if found:
            raise SchemaVersionError(
                f"{VERSION_TABLE} holds {len(found)} revisions ({', '.join(sorted(found))}); "
                "it must hold one"
            )
    if inspector.has_table(BASELINE_MARK):
        return baseline(), False
    return None, False


def schema_state(conn: sa.Connection) -> SchemaState:
    revision, recorded = current_revision(conn)
    known = [s.revision for s in _chain()]
    status: Status
    if revision is None:
        status = "empty"
    elif revision == head():
        status = "current"
    elif revision in known:
        status = "behind"
    else:
        status = "ahead"
    oldest: str | None = None
    if recorded and sa.inspect(conn).has_table(OLDEST_CODE_TABLE):
        oldest = conn.execute(sa.select(oldest_code.c.revision)).scalar()
    return SchemaState(
        revision=revision,
        release=release_of(revision),
        head=head(),
        head_release=str(release_of(head())),
        status=status,
        recorded=recorded,
        oldest_code=oldest,
    )


def _describe(state: SchemaState) -> str:
    return f"{state.revision} ({state.release or 'a newer release'})"


def check_runnable(engine: sa.Engine) -> None:
    """Refuse (SchemaVersionError, one line) a database this code must not run on.

    Behind: it needs `infsched db upgrade`. Ahead: only when the database says
    this code's revision may still run on it (every newer revision compatible).
    """
    with engine.connect() as conn:
        state = schema_state(conn)
    if state.status in ("current", "empty"):
        return
    code = f"{state.head} ({state.head_release})"
    if state.status == "behind":
        raise SchemaVersionError(
            f"the database schema is at {_describe(state)} and this code needs {code}: "
            "run `infsched db upgrade`"
        )
    known = [s.revision for s in _chain()]
    if state.oldest_code in known:
        return  # every revision after the oldest it names runs with older code
    raise SchemaVersionError(
        f"the database schema is at {_describe(state)}, newer than this code's {code}, "
        "and not marked compatible with it: install the release that upgraded the database"
    )


def _oldest_code_statements(revision: str) -> list[CreateTable | sa.Delete | sa.Insert]:
    oldest = _oldest_code_for(revision)
    return [
        CreateTable(oldest_code, if_not_exists=True),
        sa.delete(oldest_code),
        sa.insert(oldest_code).values(slot=1, revision=oldest),
    ]


def stamp_new(conn: sa.Connection, dialect: Dialect) -> None:
    """Record the head revision in a database that had no scheduler tables (before making them)."""
    # Nodes starting at once on a new database race here: IF NOT EXISTS and IGNORE let all pass.
    for table in (versions, oldest_code):
        conn.execute(CreateTable(table, if_not_exists=True))
    conn.execute(dialect.insert_ignore(versions, ["version_num"]).values(version_num=head()))
    oldest = _oldest_code_for(head())
    conn.execute(dialect.insert_ignore(oldest_code, ["slot"]).values(slot=1, revision=oldest))


def _config(conn: sa.Connection, dialect: Dialect, output: io.StringIO | None = None) -> Config:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(SCRIPT_LOCATION))
    config.attributes.update(reader=conn, dialect=dialect, output=output)
    return config


def _upgradable(conn: sa.Connection) -> SchemaState:
    state = schema_state(conn)
    if state.status == "empty":
        raise SchemaVersionError(
            "the database has no scheduler tables: `infsched db init` creates them at "
            f"{state.head} ({state.head_release})"
        )
    if state.status == "ahead":
        raise SchemaVersionError(
            f"the database schema is at {_describe(state)}, newer than this code's "
            f"{state.head} ({state.head_release}): nothing to upgrade"
        )
    return state


def upgrade(engine: sa.Engine) -> tuple[SchemaState, SchemaState]:
    """Bring the database to the head revision; its state before and after."""
    from alembic import command

    dialect = dialect_for(engine)
    with engine.connect() as conn:
        before = _upgradable(conn)
        conn.commit()  # the reads' transaction: Alembic begins one per revision
        if before.status == "behind":
            # From the base: a 0.1.0 database gets the version table and the baseline first.
            command.upgrade(_config(conn, dialect), "head")
            conn.commit()
        with conn.begin():
            for statement in _oldest_code_statements(head()):
                conn.execute(statement)
        after = schema_state(conn)
    return before, after


def upgrade_sql(engine: sa.Engine) -> str:
    """The statements `upgrade` would run now, read from the database but not run on it."""
    from alembic import command

    dialect = dialect_for(engine)
    output = io.StringIO()
    with engine.connect() as conn:
        before = _upgradable(conn)
        if before.status == "behind":
            start = "" if not before.recorded else f"{before.revision}:"
            command.upgrade(_config(conn, dialect, output), f"{start}head", sql=True)
        for statement in _oldest_code_statements(head()):
            compiled = statement.compile(
                dialect=conn.dialect, compile_kwargs={"literal_binds": True}
            )
            output.write(f"{compiled};\n\n")
    return output.getvalue()
