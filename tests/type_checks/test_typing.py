"""The repositories' generics: mypy accepts typed use and reports a wrong entity or id type."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from mypy import api

from infsched.clock import FixedClock
from infsched.dburl import DatabaseUrl
from infsched.repositories.backend import RepositoryOptions
from infsched_sms import SmsEntity
from tests.type_checks.typed_usage import (
    START,
    insert_through_the_public_api,
    round_trip,
    sms_repository,
)

ROOT = Path(__file__).resolve().parents[2]
TYPED_USAGE = Path(__file__).with_name("typed_usage.py")

#: Each line that mypy must refuse, with the words it must say.
WRONG_USAGE = """
from infsched.repositories.backend import RepositoryOptions
from infsched.repositories.base import ShardingRepository
from infsched.repositories.multi_table import MultiTableRepository
from infsched_orders.entity import OrderEntity
from infsched_sms import SmsEntity


def wrong(
    sms: ShardingRepository[SmsEntity, int],
    order: OrderEntity,
    options: RepositoryOptions[SmsEntity],
) -> None:
    sms.insert(order)
    sms.insert_many([order])
    sms.find_by_id("42")
    orders: ShardingRepository[OrderEntity, int] = MultiTableRepository(options)
    found = sms.find_by_id(42)
    found.order_id


def wrong_public_use(path: str, order: OrderEntity) -> None:
    import infsched

    with infsched.open_repositories(infsched.read_config(path)) as repositories:
        repositories.repository("sms", SmsEntity).insert(order)
        infsched.open_repository()
    infsched.read_config(42)
"""
EXPECTED = {
    14: 'Argument 1 to "insert" of "ShardingRepository" has incompatible type "OrderEntity"; '
    'expected "SmsEntity"',
    15: 'List item 0 has incompatible type "OrderEntity"; expected "SmsEntity"',
    16: 'Argument 1 to "find_by_id" of "ShardingRepository" has incompatible type "str"; '
    'expected "int"',
    17: 'Argument 1 to "MultiTableRepository" has incompatible type '
    '"RepositoryOptions[SmsEntity]"; expected "RepositoryOptions[OrderEntity]"',
    19: 'Item "SmsEntity" of "SmsEntity | None" has no attribute "order_id"',
    26: 'Argument 1 to "insert" of "ShardingRepository" has incompatible type "OrderEntity"; '
    'expected "SmsEntity"',
    27: 'Module has no attribute "open_repository"',
    28: 'Argument 1 to "read_config" has incompatible type "int"',
}


def test_mypy_accepts_typed_use_and_reports_wrong_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wrong = tmp_path / "wrong_usage.py"
    wrong.write_text(WRONG_USAGE)
    monkeypatch.chdir(ROOT)  # mypy_path in pyproject.toml is relative to the project
    out, err, _status = api.run(
        [
            "--config-file",
            str(ROOT / "pyproject.toml"),
            "--show-error-codes",
            str(TYPED_USAGE),
            str(wrong),
        ]
    )
    assert err == ""
    errors = [line for line in out.splitlines() if ": error: " in line]
    assert not [line for line in errors if "typed_usage.py" in line], out
    by_line: dict[int, list[str]] = {}
    for line in errors:
        path, line_number, _, text = line.split(":", 3)
        assert path.endswith("wrong_usage.py"), line
        by_line.setdefault(int(line_number), []).append(text)
    for number, words in EXPECTED.items():
        assert any(words in text for text in by_line.get(number, [])), (number, out)
    assert set(by_line) == set(EXPECTED), out


def test_the_typed_usage_runs(
    sqlite_url: DatabaseUrl, engine_for: Callable[[DatabaseUrl], sa.Engine]
) -> None:
    options = RepositoryOptions(
        name="sms", entity_type=SmsEntity, engine=engine_for(sqlite_url), clock=FixedClock(START)
    )
    assert round_trip(sms_repository(options)) == ["first, again", "second", "third"]


def test_the_typed_public_api_usage_runs(sqlite_url: DatabaseUrl, tmp_path: Path) -> None:
    config = tmp_path / "infsched.toml"
    raw = sqlite_url.sqlalchemy_url.render_as_string(hide_password=False)
    config.write_text(
        f'database_url = "{raw}"\n[[repositories]]\nname = "sms"\nentity = "SmsEntity"\n'
        'executor = "sms"\n'
    )
    stored = insert_through_the_public_api(config)
    assert stored.id is not None
    assert stored.message == "through the public API"
