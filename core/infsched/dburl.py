"""Database URLs: parsed, checked, and never printed with their password.

Which URLs are accepted is not known here: each dialect (infsched.dialects,
or one a plugin registers) tells `accept_scheme` how its URLs are written.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from infsched.errors import ConfigError

DEFAULT_SQLITE_URL = "sqlite:///./infsched.db"


@attrs.frozen
class UrlScheme:
    """How one database's URLs are written: a row of the driver table a dialect gives."""

    #: The dialect's name (`Dialect.name`), which a URL of this scheme selects.
    dialect: str
    #: The database's name for people (``MySQL/MariaDB``).
    title: str
    #: The driver names (``mysql``, ``mysql+pymysql``, …) a URL may start with.
    drivers: frozenset[str]
    #: The one driver a URL of this scheme is connected with (the one we build and test).
    driver: str
    #: True: a server, so a host and a database are required; False: a file, no host.
    server: bool
    #: Shown in messages for a server URL without a port.
    default_port: int | None
    #: An example URL, for messages.
    example: str


#: Every scheme's drivers, as the dialects gave them: {driver name: scheme}.
_SCHEMES: dict[str, UrlScheme] = {}


def accept_scheme(scheme: UrlScheme) -> None:
    """Accept URLs of `scheme` from now on; called for each registered dialect.

    A driver name another scheme has already keeps that one.
    """
    for driver in sorted(scheme.drivers | {scheme.driver}):
        _SCHEMES.setdefault(driver, scheme)


def url_schemes() -> Mapping[str, UrlScheme]:
    """The accepted driver names and their schemes."""
    return dict(_SCHEMES)


def _examples() -> str:
    """One example URL of each known database, for messages."""
    return " or ".join(sorted({s.example for s in _SCHEMES.values()})) or "none is known"


def _unsupported(driver: str, shown: str) -> ConfigError:
    schemes = {s.dialect: s for s in _SCHEMES.values()}
    known = "; ".join(
        f"{name}: {', '.join(sorted(s.drivers))} (e.g. {s.example})"
        for name, s in sorted(schemes.items())
    )
    return ConfigError(
        f"database_url: unsupported database {driver!r} in {shown}; "
        f"the known ones are {known or 'none'}"
    )


def _parse(raw: str | URL) -> URL:
    if isinstance(raw, URL):
        return raw
    if not isinstance(raw, str) or not raw.strip():
        raise ConfigError(
            f"database_url: an empty value is not a database URL; use e.g. {_examples()}"
        )
    try:
        url = make_url(raw.strip())
    except (ArgumentError, ValueError):  # ValueError: a port that is not a number
        # The raw text may hold a password, so it is not echoed back.
        raise ConfigError(
            "database_url: malformed URL; expected dialect+driver://user:pass@host:port/db "
            f"or a file's dialect:///PATH (e.g. {_examples()})"
        ) from None
    return url


@attrs.frozen(repr=False)
class DatabaseUrl:
    """A validated database URL.

    `str()` and `repr()` hide the password; `sqlalchemy_url` keeps it for
    connecting and is the only way to reach it.
    """

    sqlalchemy_url: URL = attrs.field(converter=_parse)
    #: How URLs of this database are written; it names the dialect that serves it.
    scheme: UrlScheme = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        url = self.sqlalchemy_url
        scheme = _SCHEMES.get(url.drivername)
        if scheme is None:
            raise _unsupported(url.drivername, str(self))
        object.__setattr__(self, "scheme", scheme)
        if scheme.server:
            if not url.host:
                raise ConfigError(f"database_url: {self} names no host")
            if "@" in url.host:
                # `user:pa@ss@host` splits the password at its first '@': the rest would
                # be shown as part of the host, so nothing of the URL is echoed.
                raise ConfigError(
                    "database_url: the host contains '@'; write an '@' inside the password "
                    f"as %40 (e.g. {scheme.driver}://user:pa%40ss@host:{scheme.default_port}/db)"
                )
            if url.port is not None and not 0 < url.port < 65536:
                raise ConfigError(f"database_url: port {url.port} in {self} is not 1-65535")
            if not url.database:
                raise ConfigError(f"database_url: {self} names no database (add /DBNAME)")
        elif url.host:
            raise ConfigError(
                f"database_url: {self} has a host; {scheme.title} URLs are {scheme.example}"
            )
        # The one driver of the scheme that we ship and test (`mysql://` means PyMySQL).
        object.__setattr__(self, "sqlalchemy_url", url.set(drivername=scheme.driver))

    @property
    def database(self) -> str | None:
        return self.sqlalchemy_url.database

    @property
    def where(self) -> str:
        """Where the database is, for error messages: host:port or the SQLite file."""
        url = self.sqlalchemy_url
        if not self.scheme.server:
            return url.database or ":memory:"
        port = url.port or self.scheme.default_port
        return (url.host or "") if port is None else f"{url.host}:{port}"

    def with_database(self, name: str) -> DatabaseUrl:
        return DatabaseUrl(self.sqlalchemy_url.set(database=name))

    def redacted(self) -> str:
        return self.sqlalchemy_url.render_as_string(hide_password=True)

    def __str__(self) -> str:
        return self.redacted()

    def __repr__(self) -> str:
        return f"DatabaseUrl({self.redacted()!r})"
