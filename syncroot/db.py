"""Telling database failures apart: a conflict between transactions, a timeout, a lost connection.

PostgreSQL names each failure with a SQLSTATE; psycopg2 carries it as `pgcode` on the error Django
wraps (`__cause__`). A failure that never reached the server (refused, reset, closed) has none.
"""

import functools
import logging
from collections.abc import Callable
from typing import ParamSpec, TypeVar

from django.db import DatabaseError, InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

DEADLOCK_DETECTED, SERIALIZATION_FAILURE, QUERY_CANCELED, LOCK_NOT_AVAILABLE = "40P01", "40001", "57014", "55P03"
CONFLICT_CODES = frozenset({DEADLOCK_DETECTED, SERIALIZATION_FAILURE})
# connection_exception (08…), admin/crash shutdown and "cannot connect now" (57P…), too many connections.
_UNAVAILABLE_PREFIXES = ("08", "57P", "53300")

P = ParamSpec("P")
R = TypeVar("R")


def pgcode(exc: BaseException) -> str | None:
    for error in (exc, exc.__cause__):
        if code := getattr(error, "pgcode", None):
            return str(code)
    return None


def is_conflict(exc: BaseException) -> bool:
    """A deadlock or serialization failure: the transaction lost a race and may simply run again."""
    return isinstance(exc, OperationalError) and pgcode(exc) in CONFLICT_CODES


def is_timeout(exc: BaseException) -> bool:
    """A statement cancelled by statement_timeout (or an operator), or a lock_timeout."""
    return isinstance(exc, OperationalError) and pgcode(exc) in (QUERY_CANCELED, LOCK_NOT_AVAILABLE)


def is_unavailable(exc: BaseException) -> bool:
    """The database could not be reached or the connection broke: nothing about this request."""
    if isinstance(exc, InterfaceError):
        return True  # "connection already closed"
    if not isinstance(exc, DatabaseError):
        return False
    code = pgcode(exc)
    if code is not None:
        return code.startswith(_UNAVAILABLE_PREFIXES)
    if isinstance(exc, OperationalError):
        return True  # refused, reset, closed by the server: no answer, so no SQLSTATE
    raw = connection.connection  # a bare DatabaseError (e.g. SSL SYSCALL): only if the link is gone
    return raw is None or bool(getattr(raw, "closed", 0))


def retry_on_conflict(func: Callable[P, R]) -> Callable[P, R]:
    """Run a write service's transaction once more when it lost a deadlock or serialization race.

    Only where the failed transaction was the whole transaction (no outer atomic block): inside
    one, the outer block is what must be retried, by its own caller.
    """

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except OperationalError as exc:
            if not is_conflict(exc) or connection.in_atomic_block:
                raise
            logger.warning(
                "database conflict; retrying once", extra={"operation": func.__name__, "pgcode": pgcode(exc)}
            )
        return func(*args, **kwargs)

    return wrapper
