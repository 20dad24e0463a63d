"""Reading ahead: the next pages of a CRM come in while the current ones are written.

An import alternates a CRM call (waiting on the network and the CRM's rate limit) with database
work; a thread that runs the read ahead, at most `depth` items in front, overlaps the two, so the
import takes about the longer of them instead of their sum, and memory stays bounded.
"""

from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

from django.db import connections

T = TypeVar("T")

_DONE = object()
_PUT_WAIT = 0.2  # seconds between looks at whether the reader was abandoned


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(source: Iterable[T], *, depth: int) -> Iterator[T]:
    """The items of `source`, produced by a thread of their own up to `depth` ahead of the caller.

    The first item is taken in the caller's thread, so what a reader does before its first item
    (reading settings or mappings from the database: a thread has a connection of its own, which
    sees only what was committed) happens where the caller's work does; the thread only pages on.
    The reader's exception is raised here once the items before it are taken, as the plain
    iteration would raise it. Closing the iterator early (a `break`, an exception in the caller)
    stops the reader at its next item.
    """
    iterator = iter(source)
    try:
        first = next(iterator)
    except StopIteration:
        return
    items: queue.Queue = queue.Queue(maxsize=max(depth, 1))
    abandoned = threading.Event()

    def put(item: object) -> bool:
        while not abandoned.is_set():
            try:
                items.put(item, timeout=_PUT_WAIT)
                return True
            except queue.Full:
                continue
        return False

    def run() -> None:
        try:
            for item in iterator:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, which decides
            put(_Failed(exc))
        finally:
            connections.close_all()  # this thread's own, if the read used the database

    # In the caller's context: its calls keep the caller's priority (crm.budget).
    reader = threading.Thread(target=contextvars.copy_context().run, args=(run,), name="prefetch", daemon=True)
    reader.start()
    try:
        yield first
        while True:
            item = items.get()
            if item is _DONE:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        abandoned.set()
        reader.join(timeout=5)
