"""Fixtures of the SMS tests: Kannel's boxes with fakesmsc, a small SMSC, and a SQLite
file for the tests that run a scheduler node."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from infsched.dburl import DatabaseUrl
from tests.loopback_servers import KannelBoxes, SmscServer


@pytest.fixture(scope="module")
def kannel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KannelBoxes]:
    """bearerbox + smsbox + fakesmsc on free ports, for one test module."""
    if not KannelBoxes.available():
        pytest.fail("Kannel is not installed: run `bash .ci/system-packages` (make test does)")
    with KannelBoxes(Path(tmp_path_factory.mktemp("kannel"))) as boxes:
        yield boxes


@pytest.fixture
def smsc() -> Iterator[SmscServer]:
    with SmscServer() as server:
        yield server


@pytest.fixture
def sqlite_url(tmp_path: Path) -> DatabaseUrl:
    """A fresh SQLite file for one test's scheduler node."""
    return DatabaseUrl(f"sqlite:///{tmp_path / 'infsched.db'}")
