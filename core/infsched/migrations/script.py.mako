"""${message}"""

from __future__ import annotations

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None

#: The release this revision comes with.
release = ""
#: Whether code of the revision before this one may run on a database at this one.
older_code_compatible = False


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
