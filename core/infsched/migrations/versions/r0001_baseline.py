"""Baseline: the schema of release 0.1.0, which recorded no version.

A database with the scheduler's tables and no version table is at this
revision; upgrading it records it and goes on from here.
"""

from __future__ import annotations

revision = "r0001"
down_revision = None
branch_labels = None
depends_on = None

release = "0.1.0"
older_code_compatible = False


def upgrade() -> None:
    """Nothing to change: 0.1.0's `db init` and maintenance made these tables."""
