"""Alembic's entry: runs the revisions on the connection `infsched.schema_versions` hands over.

``config.attributes`` carries ``reader``, the connection revisions read the
existing day tables through (also under ``--sql``, which changes nothing),
and ``dialect``, the database's infsched `Dialect`.
"""

from __future__ import annotations

from alembic import context

from infsched.migrations import VERSION_TABLE


def run_migrations() -> None:
    config = context.config
    reader = config.attributes["reader"]
    dialect = config.attributes["dialect"]

    if context.is_offline_mode():
        # --sql: the statements are written to the output buffer, none is run.
        context.configure(
            url=reader.engine.url,
            literal_binds=True,
            version_table=VERSION_TABLE,
            transactional_ddl=dialect.transactional_ddl,
            output_buffer=config.attributes["output"],
        )
    else:
        # One transaction per revision: the version row moves with each finished one.
        context.configure(
            connection=reader,
            version_table=VERSION_TABLE,
            transactional_ddl=dialect.transactional_ddl,
            transaction_per_migration=True,
        )
    with context.begin_transaction():
        context.run_migrations()


# Alembic runs this file under a name of its own; imported as part of the package
# (a scan of every module), it must do nothing.
if __name__ != "infsched.migrations.env":
    run_migrations()
