"""Database URLs: parsed, checked, and never printed with their password."""

from __future__ import annotations

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from infsched.errors import ConfigError

#: Drivers we build and test against.  `mysql://` and `mariadb://` mean PyMySQL.
_MYSQL_DRIVERS = {"mysql", "mysql+pymysql", "mariadb", "mariadb+pymysql"}
_SQLITE_DRIVERS = {"sqlite", "sqlite+pysqlite"}

DEFAULT_SQLITE_URL = "sqlite:///./infsched.db"


def _parse(raw: str | URL) -> URL:
    if isinstance(raw, URL):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(
            "database_url: an empty value is not a database URL; "
            "use e.g. mysql+pymysql://user:pass@host:3306/db or sqlite:///./infsched.db"
        )
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # The raw text may hold a password, so it is not echoed back.
        raise ConfigError(
            "database_url: malformed URL; expected dialect+driver://user:pass@host:port/db "
            "(e.g. mysql+pymysql://root@127.0.0.1:3306/infsched) or sqlite:///PATH"
        ) from None
    return url


@attrs.frozen(repr=False)
class DatabaseUrl:
    """A validated database URL.

    `str()` and `repr()` hide the password; `sqlalchemy_url` keeps it for
    connecting and is the only way to reach it.
    """

    sqlalchemy_url: URL = attrs.field(converter=_parse)

    def __attrs_post_init__(self) -> None:
        url = self.sqlalchemy_url
        driver = url.drivername
        if driver in _MYSQL_DRIVERS:
            if not url.host:
                raise ConfigError(f"database_url: {self} names no host")
            if "@" in url.host:
                # `user:pa@ss@host` splits the password at its first '@': the rest would
                # be shown as part of the host, so nothing of the URL is echoed.
                raise ConfigError(
                    "database_url: the host contains '@'; write an '@' inside the password "
                    "as %40 (e.g. mysql+pymysql://user:pa%40ss@host:3306/db)"
                )
            if url.port is not None and not 0 < url.port < 65536:
                raise ConfigError(f"database_url: port {url.port} in {self} is not 1-65535")
            if not url.database:
                raise ConfigError(f"database_url: {self} names no database (add /DBNAME)")
            # PyMySQL is the one MySQL driver we ship and test.
            object.__setattr__(self, "sqlalchemy_url", url.set(drivername="mysql+pymysql"))
        elif driver in _SQLITE_DRIVERS:
            if url.host:
                raise ConfigError(
                    f"database_url: {self} has a host; SQLite URLs are sqlite:///PATH"
                )
        else:
            raise ConfigError(
                f"database_url: unsupported database {driver!r} in {self}; "
                "use mysql+pymysql://… (MySQL/MariaDB) or sqlite:///PATH"
            )

    @property
    def is_mysql(self) -> bool:
        return self.sqlalchemy_url.get_backend_name() in {"mysql", "mariadb"}

    @property
    def is_sqlite(self) -> bool:
        return self.sqlalchemy_url.get_backend_name() == "sqlite"

    @property
    def database(self) -> str | None:
        return self.sqlalchemy_url.database

    @property
    def where(self) -> str:
        """Where the database is, for error messages: host:port or the SQLite file."""
        url = self.sqlalchemy_url
        if self.is_sqlite:
            return url.database or ":memory:"
        return f"{url.host}:{url.port or 3306}"

    def with_database(self, name: str) -> DatabaseUrl:
        return DatabaseUrl(self.sqlalchemy_url.set(database=name))

    def redacted(self) -> str:
        return self.sqlalchemy_url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"
