"""DatabaseUrl: parsing, normalisation, and a password that never shows."""

from __future__ import annotations

import pytest

from infsched.dburl import DatabaseUrl
from infsched.errors import ConfigError

SECRET = "s3cr3t-pw"


@pytest.mark.parametrize(
    "raw",
    [
        f"mysql://root:{SECRET}@db.example:3307/sched",
        f"mariadb://root:{SECRET}@db.example:3307/sched",
        f"mariadb+pymysql://root:{SECRET}@db.example:3307/sched",
    ],
)
def test_mysql_urls_are_normalised_to_pymysql(raw: str) -> None:
    url = DatabaseUrl(raw)
    assert url.sqlalchemy_url.drivername == "mysql+pymysql"
    assert url.scheme.dialect == "mysql"
    assert url.scheme.dialect != "sqlite"
    assert url.database == "sched"
    assert url.where == "db.example:3307"


#: Each server database's scheme and default port: the same password rules hold for all.
SERVER_SCHEMES = pytest.mark.parametrize(
    ("scheme", "port"), [("mysql+pymysql", 3306), ("postgresql+psycopg", 5432)]
)


@SERVER_SCHEMES
def test_password_is_hidden_from_str_repr_and_redacted_but_kept_for_connecting(
    scheme: str, port: int
) -> None:
    url = DatabaseUrl(f"{scheme}://app:{SECRET}@127.0.0.1/sched")
    for shown in (str(url), repr(url), url.redacted(), f"{url}", str([url])):
        assert SECRET not in shown
        assert "app:***@127.0.0.1" in shown
    assert url.sqlalchemy_url.password == SECRET


@SERVER_SCHEMES
def test_url_encoded_password_is_decoded_for_connecting_and_still_hidden(
    scheme: str, port: int
) -> None:
    url = DatabaseUrl(f"{scheme}://app:pa%40ss%2Fword@127.0.0.1:{port}/sched")
    assert url.sqlalchemy_url.password == "pa@ss/word"
    assert url.sqlalchemy_url.host == "127.0.0.1"
    assert str(url) == f"{scheme}://app:***@127.0.0.1:{port}/sched"


@SERVER_SCHEMES
def test_password_with_a_raw_at_sign_is_refused_without_echoing_any_of_it(
    scheme: str, port: int
) -> None:
    # Parsed naively, "se@cr3t" splits into password "se" and host "cr3t@host":
    # half the password would be printed as the host.
    with pytest.raises(ConfigError) as err:
        DatabaseUrl(f"{scheme}://app:se@cr3t@host:{port}/sched")
    message = str(err.value)
    assert message.startswith("database_url:")
    assert "%40" in message
    assert "cr3t" not in message
    assert "se@" not in message


@pytest.mark.parametrize(
    "raw",
    [
        f"postgresql://app:{SECRET}@db.example:5433/sched",
        f"postgresql+psycopg://app:{SECRET}@db.example:5433/sched",
    ],
)
def test_postgresql_urls_are_normalised_to_psycopg(raw: str) -> None:
    url = DatabaseUrl(raw)
    assert url.sqlalchemy_url.drivername == "postgresql+psycopg"
    assert url.scheme.dialect == "postgresql"
    assert url.database == "sched"
    assert url.where == "db.example:5433"


def test_default_postgresql_port_is_shown_as_5432() -> None:
    assert DatabaseUrl("postgresql+psycopg://app@db.internal/sched").where == "db.internal:5432"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("not a url at all", "malformed URL"),
        (f"mysql+pymysql://root:{SECRET}@host:notaport/db", "malformed URL"),
        (f"mysql+pymysql://root:{SECRET}@host:99999/db", "port 99999"),
        (f"mysql+pymysql://root:{SECRET}@/db", "names no host"),
        (f"mysql+pymysql://root:{SECRET}@host", "names no database"),
        (f"oracle://root:{SECRET}@host/db", "unsupported database 'oracle'"),
        (f"postgresql+psycopg://root:{SECRET}@/db", "names no host"),
        (f"postgresql+psycopg://root:{SECRET}@host", "names no database"),
        ("sqlite://somehost/x.db", "SQLite URLs are sqlite:///PATH"),
        ("", "an empty value"),
        ("   ", "an empty value"),
    ],
)
def test_bad_urls_name_the_field_and_what_is_allowed_but_not_the_password(
    raw: str, expected: str
) -> None:
    with pytest.raises(ConfigError) as err:
        DatabaseUrl(raw)
    message = str(err.value)
    assert message.startswith("database_url:")
    assert expected in message
    assert SECRET not in message


def test_sqlite_url_where_is_its_file_and_memory_is_named() -> None:
    url = DatabaseUrl("sqlite:////var/lib/infsched/sched.db")
    assert url.scheme.dialect == "sqlite"
    assert url.scheme.dialect != "mysql"
    assert url.where == "/var/lib/infsched/sched.db"
    assert DatabaseUrl("sqlite://").where == ":memory:"


def test_default_mysql_port_is_shown_as_3306() -> None:
    assert DatabaseUrl("mysql+pymysql://root@db.internal/sched").where == "db.internal:3306"


def test_with_database_keeps_credentials_and_host() -> None:
    url = DatabaseUrl(f"mysql+pymysql://app:{SECRET}@127.0.0.1:3306/one")
    other = url.with_database("two")
    assert other.database == "two"
    assert other.sqlalchemy_url.password == SECRET
    assert other.where == "127.0.0.1:3306"
    assert url.database == "one"


def test_database_urls_compare_by_value() -> None:
    assert DatabaseUrl("mysql://root@h/db") == DatabaseUrl("mysql+pymysql://root@h/db")
    assert DatabaseUrl("sqlite:///a.db") != DatabaseUrl("sqlite:///b.db")


def test_an_unknown_scheme_is_one_line_naming_each_known_database_and_its_drivers() -> None:
    with pytest.raises(ConfigError) as err:
        DatabaseUrl(f"oracle://root:{SECRET}@host/db")
    message = str(err.value)
    assert "\n" not in message
    assert SECRET not in message
    for known in (
        "mysql: mariadb, mariadb+pymysql, mysql, mysql+pymysql",
        "postgresql: postgresql, postgresql+psycopg",
        "sqlite: sqlite,",
    ):
        assert known in message
    assert "sqlite:///PATH" in message


# -- a database several members serve --

MEMBERS = [f"mysql://sched:{SECRET}@db{i}.example:3306/sched" for i in (1, 2, 3)]


def test_members_are_one_url_with_every_endpoint_in_order_and_no_password_shown() -> None:
    url = DatabaseUrl.members(MEMBERS)
    assert [str(e) for e in url.endpoints] == [
        "db1.example:3306",
        "db2.example:3306",
        "db3.example:3306",
    ]
    assert url.where == "db1.example:3306, db2.example:3306, db3.example:3306"
    assert url.sqlalchemy_url.host == "db1.example"
    assert SECRET not in str(url)
    assert SECRET not in repr(url)
    assert str(url).endswith("(+2 more members)")
    assert [u.host for u in url.member_urls()] == ["db1.example", "db2.example", "db3.example"]
    # Another database on the same members keeps them.
    assert url.with_database("other").endpoints == url.endpoints
    assert DatabaseUrl(MEMBERS[0]).endpoints == url.endpoints[:1]


@pytest.mark.parametrize(
    ("members", "message"),
    [
        (
            [MEMBERS[0], MEMBERS[1].replace("/sched", "/other")],
            "differ in more than host and port",
        ),
        ([MEMBERS[0], MEMBERS[1].replace("sched:", "admin:")], "differ in more than host"),
        ([MEMBERS[0], MEMBERS[0]], "member db1.example:3306 is listed twice"),
        (["sqlite:///a.db", "sqlite:///b.db"], "is a file; only a server has members"),
        ([], "needs at least one URL"),
    ],
)
def test_members_that_are_not_one_database_are_refused_in_one_line(
    members: list[str], message: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        DatabaseUrl.members(members)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)
    assert SECRET not in str(raised.value)
