"""The revisions, one module each (Alembic reads them from here; nothing imports this)."""
