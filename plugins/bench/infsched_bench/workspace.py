"""Throwaway databases for a benchmark run, dropped afterwards."""

from __future__ import annotations

import contextlib
import secrets
import tempfile
from collections.abc import Iterator
from pathlib import Path

from infsched.database import check_reachable, create_engine
from infsched.dburl import DatabaseUrl
from infsched.dialects import registered_dialect


@contextlib.contextmanager
def throwaway_database(server: DatabaseUrl) -> Iterator[DatabaseUrl]:
    """A new empty database on the server `server` names (a temp file for a file database)."""
    if not server.scheme.server:
        with tempfile.TemporaryDirectory(prefix="infsched-bench-") as tmp:
            yield DatabaseUrl(f"sqlite:///{Path(tmp) / 'bench.db'}")
        return
    admin = create_engine(server)
    check_reachable(admin, server)
    dialect = registered_dialect(server.scheme.dialect)
    name = f"infsched_bench_{secrets.token_hex(4)}"
    dialect.create_database(admin, name)
    try:
        yield server.with_database(name)
    finally:
        dialect.drop_database(admin, name)
        admin.dispose()
