"""Reading ahead in a thread of its own: order, errors where they happened, a bounded lead."""

import threading
import time

import pytest

from providers.prefetch import prefetched


def test_items_come_in_order_and_the_first_in_the_callers_thread():
    threads: list[str] = []

    def read():
        for n in range(50):
            threads.append(threading.current_thread().name)
            yield n

    assert list(prefetched(read(), depth=4)) == list(range(50))
    assert threads[0] == threading.current_thread().name  # what a reader does first happens here
    assert set(threads[1:]) == {"prefetch"}


def test_the_readers_error_comes_after_the_items_before_it():
    def read():
        yield 1
        yield 2
        raise ValueError("page 3 failed")

    items = prefetched(read(), depth=10)

    assert [next(items), next(items)] == [1, 2]
    with pytest.raises(ValueError, match="page 3 failed"):
        next(items)


def test_the_reader_stays_at_most_depth_ahead_and_stops_when_the_caller_does():
    produced: list[int] = []

    def read():
        for n in range(1000):
            produced.append(n)
            yield n

    items = prefetched(read(), depth=5)
    assert next(items) == 0
    deadline = time.monotonic() + 5
    while len(produced) < 7 and time.monotonic() < deadline:  # 0, five queued, one waiting to go in
        time.sleep(0.01)

    items.close()  # returns once the reader has stopped

    assert len(produced) == 7
    assert not any(thread.name == "prefetch" for thread in threading.enumerate())


def test_nothing_to_read():
    assert list(prefetched(iter(()), depth=3)) == []
