"""``infsched entities add``: JSON lines from a file or stdin, checked by line, written by batch."""

from __future__ import annotations

import decimal
import enum
import io
import json
import os
import pty
import select
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest

from infsched.config import load_config
from infsched.configured_repositories import build_repositories
from infsched.dburl import DatabaseUrl
from infsched.entities import column, id_field, sharding_key
from infsched.errors import EntityError
from infsched.management.entity_import import EntityParser
from infsched.plugins import load_plugins
from infsched.repositories.base import ShardingRepository
from infsched.repositories.partitioned import PartitionedRepository
from infsched_sms import SmsEntity
from tests.management_support import Cli, clean_cli

SMS = """
[[repositories]]
name = "sms"
entity = "SmsEntity"
executor = "sms"
"""

SOON = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Cli:
    return clean_cli(capsys, monkeypatch, tmp_path)


@pytest.fixture
def site(tmp_path: Path) -> Path:
    path = tmp_path / "site.toml"
    path.write_text(SMS)
    return path


@pytest.fixture
def sms(site: Path, every_url: DatabaseUrl) -> Iterator[ShardingRepository[Any, Any]]:
    """The configured repository, as the command builds it."""
    config = load_config(site, env={}, flags={"database_url": str(every_url)}).config
    [item] = build_repositories(config, load_plugins())
    yield item.repository
    item.repository.engine.dispose()


def url(every_url: DatabaseUrl) -> str:
    return every_url.sqlalchemy_url.render_as_string(hide_password=False)


def message(entity_id: int | None = None, **changes: Any) -> str:
    """One JSON line of an SmsEntity."""
    values: dict[str, Any] = {
        "scheduled_time": (SOON + timedelta(seconds=entity_id or 0)).isoformat(),
        "phone_number": "+4915112345678",
        "sender": "ACME",
        "message": f"message {entity_id}",
    }
    if entity_id is not None:
        values["id"] = entity_id
    values.update(changes)
    return json.dumps(values)


def stored(repository: ShardingRepository[Any, Any]) -> list[int]:
    found = repository.find_all_by_date_range(SOON - timedelta(days=1), SOON + timedelta(days=1))
    return sorted(e.id for e in found)


def write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "sms.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_a_file_is_added_in_batches_and_counted(
    cli: Cli, site: Path, every_url: DatabaseUrl, sms: ShardingRepository[Any, Any], tmp_path: Path
) -> None:
    lines = [message(i) for i in range(1, 26)]
    lines.insert(10, "")  # blank lines carry nothing and are no error
    path = write(tmp_path, lines)
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    result = cli(*args, str(path), "--batch-size", "10", "--json")
    assert result.code == 0, result.err
    assert result.json() == {
        "repository": "sms",
        "added": 25,
        "skipped": 0,
        "held_back": 0,
        "bad_lines": [],
    }
    assert result.err == ""  # no progress bar off a terminal
    assert stored(sms) == list(range(1, 26))
    entity = sms.find_by_id(3)
    assert isinstance(entity, SmsEntity)
    assert entity.scheduled_time == SOON + timedelta(seconds=3)
    assert entity.message == "message 3"

    # Entities without an id get one (a BOM and CRLF line ends are no error); the text
    # form says how many were added.
    crlf = tmp_path / "crlf.jsonl"
    crlf.write_bytes(b"\xef\xbb\xbf" + f"{message()}\r\n{message()}\r\n".encode())
    text = cli(*args, str(crlf))
    assert text.code == 0, text.err
    assert text.out.strip() == "added 2 entities to sms"
    assert len(stored(sms)) == 27


def test_stdin_is_read_given_dash_or_no_file(
    cli: Cli,
    site: Path,
    every_url: DatabaseUrl,
    sms: ShardingRepository[Any, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    for source, ids in (["-"], [1, 2]), ([], [3]):
        data = "".join(message(i) + "\n" for i in ids).encode()
        monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
        result = cli(*args, *source, "--json")
        assert result.code == 0, result.err
        assert result.json()["added"] == len(ids)
    assert stored(sms) == [1, 2, 3]


BAD_INPUT = [
    message(1),
    message(2),
    message(3),
    message(4),  # batch 1 (lines 1-4): clean, written
    message(5),
    '{"id": 6, "scheduled_time": ',  # line 6: not JSON
    message(7),
    message(8),  # batch 2 (lines 5-8): held back
    message(9, colour="red"),  # line 9: no such field
    message(10, scheduled_time="2026-12-01T10:00:00"),  # line 10: no timezone
    message(11, phone_number="12345"),  # line 11: the type's own validation
    message(12),  # batch 3 (lines 9-12): held back
    message(13),
    message(13),  # line 14: the id of line 13 again
    message(15, scheduled_time=(SOON - timedelta(days=30)).isoformat()),  # line 15: expired
    "[1, 2]",  # line 16: not an object; batch 4 (13-16): held back
    message(17),
    message(18, priority="high"),  # line 18: a field of the wrong type
    message(19),
    message(20),  # batch 5 (17-20): held back
    message(21),  # batch 6: clean, written
]
BAD_LINES = [
    "line 6: not JSON: Expecting value at column 29",
    "line 9: SmsEntity has no field 'colour' (fields: id, scheduled_time, phone_number, "
    "sender, message, coding, priority, validity_minutes, delivery_report, reference)",
    "line 10: SmsEntity.scheduled_time: '2026-12-01T10:00:00' has no timezone, so it could "
    "mean any time; add one, e.g. 2025-01-01T12:00:00Z",
    "line 11: SmsEntity.phone_number: '12345' is not an E.164 number (+, country code and "
    "national number without spaces, of a length that country uses, e.g. +4915112345678)",
    "line 14: SmsEntity id 13 is on line 13 too; ids are unique",
    "line 15: SmsEntity.scheduled_time: ",
    "line 16: expected a JSON object (one SmsEntity), got an array",
    "line 18: SmsEntity.priority: expected int, got str ('high')",
]


def _check_bad_lines(reported: list[str]) -> None:
    assert len(reported) == len(BAD_LINES)
    for got, expected in zip(reported, BAD_LINES, strict=True):
        assert got.startswith(expected), got
    assert "is before the retention horizon" in reported[5]


def test_bad_lines_are_reported_by_number_and_their_batches_write_nothing(
    cli: Cli, site: Path, every_url: DatabaseUrl, sms: ShardingRepository[Any, Any], tmp_path: Path
) -> None:
    path = write(tmp_path, BAD_INPUT)
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    result = cli(*args, str(path), "--batch-size", "4")
    assert result.code == 1
    _check_bad_lines(result.err.strip().splitlines())
    assert stored(sms) == [1, 2, 3, 4, 21]
    assert result.out.strip() == (
        "added 5 entities to sms; 8 bad lines, so 8 good lines of their batches were not "
        "written (fix them and add those lines again, or use --skip-bad)"
    )

    again = cli(*args, str(path), "--batch-size", "4", "--json")
    assert again.code == 1
    report = again.json()
    assert (report["added"], report["skipped"]) == (0, 0)
    # The batches written the first time now hold ids already stored: named, not written.
    first, *rest, last = report["bad_lines"]
    assert (first["line"], last["line"]) == (1, 21)
    assert first["error"].startswith("SmsEntity id 1 is already stored in repository 'sms'")
    _check_bad_lines([f"line {b['line']}: {b['error']}" for b in rest])
    assert stored(sms) == [1, 2, 3, 4, 21]


def test_skip_bad_writes_every_good_line(
    cli: Cli, site: Path, every_url: DatabaseUrl, sms: ShardingRepository[Any, Any], tmp_path: Path
) -> None:
    path = write(tmp_path, BAD_INPUT)
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    result = cli(*args, str(path), "--batch-size", "4", "--skip-bad")
    assert result.code == 0, result.err
    _check_bad_lines(result.err.strip().splitlines())
    assert stored(sms) == [1, 2, 3, 4, 5, 7, 8, 12, 13, 17, 19, 20, 21]
    assert result.out.strip() == "added 13 entities to sms; skipped 8 bad lines"


def test_an_id_already_stored_is_named_by_its_line(
    cli: Cli, site: Path, every_url: DatabaseUrl, sms: ShardingRepository[Any, Any], tmp_path: Path
) -> None:
    [taken] = sms.insert_many([SmsEntity(**_fields(json.loads(message(42))))])
    path = write(tmp_path, [message(40), message(41), message(42), message(43)])
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    result = cli(*args, str(path), "--json")
    assert result.code == 1
    report = result.json()
    assert report["added"] == 0
    assert report["held_back"] == 3
    [bad] = report["bad_lines"]
    assert bad["line"] == 3
    assert bad["error"].startswith("SmsEntity id 42 is already stored in repository 'sms'")
    assert stored(sms) == [42]

    skipping = cli(*args, str(path), "--skip-bad", "--json")
    assert skipping.code == 0, skipping.err
    assert (skipping.json()["added"], skipping.json()["skipped"]) == (3, 1)
    assert stored(sms) == [40, 41, 42, 43]
    assert taken.id == 42


def _fields(values: dict[str, Any]) -> dict[str, Any]:
    values["scheduled_time"] = datetime.fromisoformat(values["scheduled_time"])
    return values


def test_unknown_repository_and_missing_file_give_one_line(
    cli: Cli, site: Path, every_url: DatabaseUrl, tmp_path: Path
) -> None:
    base = ("entities", "add", "--config", str(site), "--db", url(every_url))
    path = write(tmp_path, [message(1)])
    unknown = cli(*base, "--repo", "nope", str(path))
    assert unknown.code == 1
    assert unknown.err.strip().splitlines() == [
        "error: no repository named 'nope' is configured (configured: sms)"
    ]
    as_json = cli(*base, "--repo", "nope", str(path), "--json")
    assert as_json.code == 1
    assert json.loads(as_json.err) == {
        "error": "no repository named 'nope' is configured (configured: sms)"
    }
    missing = cli(*base, "--repo", "sms", str(tmp_path / "absent.jsonl"))
    assert missing.code == 2
    assert "No such file or directory" in missing.err
    zero = cli(*base, "--repo", "sms", str(path), "--batch-size", "0")
    assert zero.code == 2
    assert "--batch-size" in zero.err


def test_a_progress_bar_shows_on_a_terminal(
    site: Path, sqlite_url: DatabaseUrl, tmp_path: Path
) -> None:
    path = write(tmp_path, [message(i) for i in range(1, 3001)])
    main, child = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("INFSCHED_")}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "infsched"),
            "entities",
            "add",
            "--repo",
            "sms",
            "--config",
            str(site),
            "--db",
            url(sqlite_url),
            str(path),
            "--batch-size",
            "500",
        ],
        stdin=subprocess.DEVNULL,
        stdout=child,
        stderr=child,
        cwd=tmp_path,
        env={**env, "COLUMNS": "120", "TERM": "xterm"},
    )
    os.close(child)
    output = b""
    while True:
        ready, _, _ = select.select([main], [], [], 60)
        if not ready:
            break
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the child closed the terminal
            break
        if not chunk:
            break
        output += chunk
    assert process.wait(timeout=60) == 0
    os.close(main)
    text = output.decode(errors="replace")
    assert "adding to sms" in text  # the bar, drawn on the terminal, batch by batch
    assert "3,000 lines" in text
    assert f"/{path.stat().st_size / 1000:.1f} kB" in text
    assert "added 3,000 entities to sms" in text


class Tier(enum.Enum):
    GOLD = "gold"
    SILVER = "silver"


@attrs.define(kw_only=True)
class Invoice:
    id: str | None = id_field(length=32)
    due: datetime = sharding_key()
    amount: decimal.Decimal = column(precision=10, scale=2)
    issued: date = column()
    tier: Tier = column(default=Tier.SILVER)
    lines: list[Any] = column(factory=list)
    ratio: float = column(default=1.0)


def test_json_values_become_each_field_type_or_say_what_is_wrong() -> None:
    parser = EntityParser(Invoice)
    invoice = parser.entity(
        {
            "id": "inv-1",
            "due": "2026-12-01T10:00:00+02:00",
            "amount": "12.50",
            "issued": "2026-11-30",
            "tier": "gold",
            "lines": [{"sku": "a"}],
            "ratio": 2,
        }
    )
    assert invoice == Invoice(
        id="inv-1",
        due=datetime(2026, 12, 1, 8, tzinfo=UTC),
        amount=decimal.Decimal("12.50"),
        issued=date(2026, 11, 30),
        tier=Tier.GOLD,
        lines=[{"sku": "a"}],
        ratio=2,
    )
    assert parser.entity({"due": "2026-12-01T10:00:00Z", "amount": 3, "issued": "2026-11-30"})
    base = {"due": "2026-12-01T10:00:00Z", "amount": "1", "issued": "2026-11-30"}
    wrong: list[tuple[dict[str, Any], str]] = [
        ({"amount": "1.234"}, "Invoice.amount: 1.234 has too many decimal places"),
        ({"amount": "lots"}, "Invoice.amount: 'lots' is not a decimal number"),
        ({"issued": "30/11/2026"}, "Invoice.issued: '30/11/2026' is not a date, e.g. 2025-01-01"),
        ({"due": "noon"}, "Invoice.due: 'noon' is not an ISO-8601 time"),
        ({"due": 1764583200}, "Invoice.due: expected datetime, got int"),
        ({"tier": "bronze"}, "Invoice.tier: 'bronze' is not one of 'gold', 'silver'"),
        ({"id": "x" * 40}, "Invoice.id: 40 characters, longer than the column's 32"),
        ({"ratio": "high"}, "Invoice.ratio: expected float, got str"),
    ]
    for change, expected in wrong:
        with pytest.raises(EntityError) as error:
            parser.entity({**base, **change})
        assert str(error.value).startswith(expected), error.value
    with pytest.raises(EntityError, match=r"^Invoice\.issued: a value is required$"):
        parser.entity({"due": "2026-12-01T10:00:00Z", "amount": "1"})
    with pytest.raises(EntityError, match=r"^expected a JSON object \(one Invoice\), got null$"):
        parser.entity(None)


def test_a_batch_the_database_fails_says_where_to_resume(
    cli: Cli, site: Path, every_url: DatabaseUrl, sms: ShardingRepository[Any, Any], tmp_path: Path
) -> None:
    sms.maintain()
    with sms.engine.begin() as conn:  # the database itself refuses id 7
        if every_url.scheme.dialect == "mysql":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_7 BEFORE INSERT ON sms FOR EACH ROW "
                "IF NEW.id = 7 THEN SIGNAL SQLSTATE '45000' SET MESSAGE_TEXT = 'refused'; END IF"
            )
        elif every_url.scheme.dialect == "postgresql":
            day = SOON + timedelta(seconds=7)
            # Partitioned: a row trigger on the table is every partition's.
            table = "sms" if isinstance(sms, PartitionedRepository) else f"sms_{day:%Y%m%d}"
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_7() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                "IF NEW.id = 7 THEN RAISE EXCEPTION 'refused'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_7 BEFORE INSERT ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION refuse_7()"
            )
        else:
            day = SOON + timedelta(seconds=7)
            conn.exec_driver_sql(
                f"CREATE TRIGGER refuse_7 BEFORE INSERT ON sms_{day:%Y%m%d} "
                "WHEN NEW.id = 7 BEGIN SELECT RAISE(ABORT, 'refused'); END"
            )
    path = write(tmp_path, [message(i) for i in range(1, 11)])
    args = ("entities", "add", "--repo", "sms", "--config", str(site), "--db", url(every_url))
    result = cli(*args, str(path), "--batch-size", "4")
    assert result.code == 1
    [line] = result.err.strip().splitlines()
    assert line.startswith("error: the database failed the batch of lines 5-8 (")
    assert "refused" in line
    assert line.endswith(
        "nothing of it was written, and the 4 entities of the lines before it were added: "
        "resume from line 5"
    )
    assert stored(sms) == [1, 2, 3, 4]
