"""Locks across processes, held in PostgreSQL so a killed process never leaves one behind."""

import time
from collections.abc import Iterator
from contextlib import contextmanager

from django.db import connection


@contextmanager
def advisory_lock(key: str, *, wait: float = 0.0, poll: float = 0.05) -> Iterator[bool]:
    """A session advisory lock on `key`; yields whether it is held (trying for up to `wait` seconds).

    Released on exit, and by PostgreSQL the moment the holder's connection ends: a worker killed
    while holding it blocks nobody (a lock with an expiry in Redis would stall others until then).
    """
    deadline = time.monotonic() + wait
    while True:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_try_advisory_lock(hashtext(%s))", [key])
            held = bool(cursor.fetchone()[0])
        if held or time.monotonic() >= deadline:
            break
        time.sleep(poll)
    try:
        yield held
    finally:
        if held:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pg_advisory_unlock(hashtext(%s))", [key])
