"""MemberRoute on real servers: a member that refuses is passed over, once, and the rest stay.

The Galera cases (a member not ready, a member killed under load) are in
tests/test_galera.py; these need only a port nothing listens on and the
shared server.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Callable

import pytest
import sqlalchemy as sa

from infsched.database import check_reachable, open_database
from infsched.dburl import DatabaseUrl
from infsched.errors import DatabaseUnreachableError
from infsched.member_route import member_of


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_dead_first(url: DatabaseUrl) -> DatabaseUrl:
    dead = url.sqlalchemy_url.set(port=closed_port())
    return DatabaseUrl.members([dead, url.sqlalchemy_url])


def test_a_member_that_refuses_is_passed_over_and_the_next_one_kept(
    mysql_database_factory: Callable[[], DatabaseUrl], caplog: pytest.LogCaptureFixture
) -> None:
    live = mysql_database_factory()
    url = with_dead_first(live)
    database = open_database(url)
    try:
        with (
            caplog.at_level(logging.WARNING, logger="infsched.database"),
            database.engine.connect() as first,
            database.engine.connect() as second,
        ):
            assert first.execute(sa.text("SELECT 1")).scalar_one() == 1
            assert member_of(first) == member_of(second) == str(live.endpoints[0])
        moves = [r.getMessage() for r in caplog.records if "moving from member" in r.getMessage()]
        # Once: the second connection went straight to the member in use.
        assert len(moves) == 1, moves
        assert f"to {live.endpoints[0]}" in moves[0]
        assert "Connection refused" in moves[0]
    finally:
        database.dispose()


def test_when_no_member_answers_the_error_names_every_member_in_one_line(
    mysql_database_factory: Callable[[], DatabaseUrl],
) -> None:
    live = mysql_database_factory()
    dead = [live.sqlalchemy_url.set(port=closed_port()) for _ in range(2)]
    url = DatabaseUrl.members(dead)
    database = open_database(url)
    try:
        with pytest.raises(DatabaseUnreachableError) as raised:
            check_reachable(database.engine, url)
    finally:
        database.dispose()
    message = str(raised.value)
    assert "\n" not in message
    assert url.where in message
