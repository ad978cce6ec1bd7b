"""The schema's migrations, run by Alembic: `env.py`, and `versions/` with one revision per change.

Each revision module names the release that brought it (`release`) and says
whether code of the revision before it may still run on a database at it
(`older_code_compatible`: the change only adds what the older code ignores).
Day tables and partitions come and go with maintenance, so a revision finds
the existing ones (`day_tables`) and alters each one it finds unaltered: a run
that stopped halfway (MariaDB's DDL is not transactional) is simply run again.
"""

from __future__ import annotations

from pathlib import Path

#: The table recording a database's revision (Alembic's version table, under our name).
VERSION_TABLE = "infsched_schema_version"

#: Where Alembic finds env.py and versions/.
SCRIPT_LOCATION = Path(__file__).resolve().parent
