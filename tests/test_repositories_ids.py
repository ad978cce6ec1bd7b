"""64-bit time-ordered ids: layout, order, uniqueness across threads, a clock that steps back."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest

from infsched.repositories.ids import (
    EPOCH,
    MAX_NODE,
    IdGenerator,
    default_id_generator,
    id_created_at,
    id_node,
    id_sequence,
)

MS_2025 = int(datetime(2025, 6, 1, tzinfo=UTC).timestamp() * 1000)


def test_an_id_holds_its_time_node_and_sequence() -> None:
    generator = IdGenerator(node=517, now_ms=lambda: MS_2025)
    first, second = generator.next_ids(2)
    assert id_created_at(first) == datetime(2025, 6, 1, tzinfo=UTC)
    assert (id_node(first), id_sequence(first)) == (517, 0)
    assert (id_node(second), id_sequence(second)) == (517, 1)
    assert 0 < first < second < 2**63


def test_ids_rise_with_time() -> None:
    now = [MS_2025]
    generator = IdGenerator(node=1, now_ms=lambda: now[0])
    a = generator.next_id()
    now[0] += 1
    b = generator.next_id()
    assert b > a
    assert id_created_at(b) - id_created_at(a) == timedelta(milliseconds=1)
    assert id_sequence(b) == 0


def test_more_than_4096_ids_in_one_millisecond_borrow_the_next() -> None:
    generator = IdGenerator(node=2, now_ms=lambda: MS_2025)
    made = generator.next_ids(5000)
    assert made == sorted(set(made))
    assert id_created_at(made[4096]) - id_created_at(made[0]) == timedelta(milliseconds=1)


def test_a_clock_that_steps_back_never_repeats_an_id() -> None:
    now = [MS_2025]
    generator = IdGenerator(node=3, now_ms=lambda: now[0])
    before = generator.next_ids(3)
    now[0] -= 60_000
    after = generator.next_ids(3)
    assert before + after == sorted(set(before + after))


def test_threads_never_share_an_id() -> None:
    generator = IdGenerator()
    made: list[list[int]] = [[] for _ in range(4)]

    def work(slot: int) -> None:
        for _ in range(2000):
            made[slot].append(generator.next_id())

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    every = [i for ids in made for i in ids]
    assert len(set(every)) == 8000
    assert all(ids == sorted(ids) for ids in made)


def test_generators_with_different_nodes_never_collide() -> None:
    a = IdGenerator(node=4, now_ms=lambda: MS_2025)
    b = IdGenerator(node=5, now_ms=lambda: MS_2025)
    assert not set(a.next_ids(100)) & set(b.next_ids(100))


@pytest.mark.parametrize("node", [-1, MAX_NODE + 1, True, "7"])
def test_a_node_outside_ten_bits_is_refused(node: object) -> None:
    with pytest.raises(ValueError, match="id node must be an integer from 0 to 1023"):
        IdGenerator(node=node)  # type: ignore[arg-type]


def test_a_clock_before_the_epoch_is_refused() -> None:
    generator = IdGenerator(node=0, now_ms=lambda: int(EPOCH.timestamp() * 1000) - 1)
    with pytest.raises(OverflowError, match="outside the id range"):
        generator.next_id()


def test_the_process_shares_one_default_generator() -> None:
    assert default_id_generator() is default_id_generator()
    made = default_id_generator().next_id()
    assert abs(id_created_at(made) - datetime.now(UTC)) < timedelta(seconds=5)
