"""Database failures as PostgreSQL really raises them: a deadlock is retried once (and otherwise is
a 503 `database_conflict`), a statement timeout is a 503 `database_timeout`, and only a failed
connection is "database unavailable"."""

import logging
import random
import threading
from collections.abc import Callable

import pytest
from django.db import InterfaceError, OperationalError, ProgrammingError, connection, connections, transaction
from django.urls import path
from rest_framework.views import APIView

from syncroot import db
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db

_raised: dict[str, BaseException] = {}


class Raises(APIView):
    """Raises the database error the test stored (a real one, caught where PostgreSQL raised it)."""

    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        raise _raised["error"]


class SlowQuery(APIView):
    authentication_classes: list = []
    permission_classes: list = []

    def get(self, request):
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SET LOCAL statement_timeout = '50ms'")
            cursor.execute("SELECT pg_sleep(5)")


urlpatterns = [path("raises", Raises.as_view()), path("slow", SlowQuery.as_view())]
handler500 = "syncroot.errors.handler500"


@pytest.fixture
def app_client(client):
    client.raise_request_exception = False  # answer like production: through handler500
    return client


def _lock(key: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [key])


def deadlock(wrap: Callable[[Callable], Callable]) -> tuple[list[BaseException], list[int]]:
    """Two transactions take two locks in opposite orders: PostgreSQL breaks the deadlock by
    failing one of them. Each runs `wrap(write)`; returns the errors raised and every attempt."""
    first, second = random.sample(range(10**9, 2 * 10**9), 2)
    barrier = threading.Barrier(2, timeout=30)
    errors: list[BaseException] = []
    attempts: list[int] = []

    def write(mine: int, theirs: int) -> None:
        attempts.append(mine)
        with transaction.atomic():
            _lock(mine)
            if attempts.count(mine) == 1:  # only the first attempts meet; a retry runs alone
                barrier.wait()
            _lock(theirs)

    def party(mine: int, theirs: int) -> None:
        try:
            wrap(write)(mine, theirs)
        except Exception as exc:  # collected for the test to inspect
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=party, args=pair) for pair in ((first, second), (second, first))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return errors, attempts


def test_a_deadlocked_write_is_run_once_more_and_both_writes_succeed():
    errors, attempts = deadlock(db.retry_on_conflict)

    assert errors == []
    assert len(attempts) == 3  # one of the two lost the race and ran again


def test_inside_an_outer_transaction_the_conflict_is_left_to_the_outer_caller():
    def in_outer_block(write: Callable) -> Callable:
        def run(mine: int, theirs: int) -> None:
            with transaction.atomic():
                db.retry_on_conflict(write)(mine, theirs)

        return run

    errors, attempts = deadlock(in_outer_block)

    assert len(errors) == 1
    assert len(attempts) == 2


@pytest.mark.urls(__name__)
def test_a_deadlock_not_retried_is_a_503_database_conflict_with_its_traceback(app_client, caplog):
    errors, _ = deadlock(lambda write: write)
    assert db.pgcode(errors[0]) == db.DEADLOCK_DETECTED
    _raised["error"] = errors[0]

    with caplog.at_level(logging.ERROR, logger="syncroot.errors"):
        response = app_client.get("/raises")

    assert assert_error(response, 503, "database_conflict")["details"] == {"service": "database"}
    assert response["Retry-After"] == "1"
    assert [r.exc_info[0] for r in caplog.records if r.name == "syncroot.errors"] == [OperationalError]


@pytest.mark.urls(__name__)
def test_a_statement_timeout_is_a_503_database_timeout_with_its_traceback(app_client, caplog):
    with caplog.at_level(logging.ERROR, logger="syncroot.errors"):
        response = app_client.get("/slow")

    assert assert_error(response, 503, "database_timeout")["details"] == {"service": "database"}
    assert [r.exc_info[0] for r in caplog.records if r.name == "syncroot.errors"] == [OperationalError]


def _unreachable():
    default = connections["default"]
    return default.__class__({**default.settings_dict, "HOST": "127.0.0.1", "PORT": "1"}, alias="unreachable")


def _refused() -> BaseException:
    with pytest.raises(OperationalError) as raised:
        _unreachable().ensure_connection()
    return raised.value


def _closed() -> BaseException:
    default = connections["default"]
    other = default.__class__(dict(default.settings_dict), alias="closing")
    other.ensure_connection()
    other.connection.close()  # as a server restart leaves it
    with pytest.raises(InterfaceError) as raised, other.cursor() as cursor:
        cursor.execute("SELECT 1")
    return raised.value


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("make", [_refused, _closed])
def test_only_a_failed_connection_is_database_unavailable(app_client, make):
    _raised["error"] = make()

    response = app_client.get("/raises")

    assert assert_error(response, 503, "service_unavailable")["details"] == {"service": "database"}
    assert response["Retry-After"] == "5"


@pytest.mark.urls(__name__)
def test_a_query_error_that_mentions_a_connection_is_a_500_not_an_outage(app_client):
    with pytest.raises(ProgrammingError) as raised, transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT * FROM connection_pool_settings")  # no such table
    _raised["error"] = raised.value

    assert_error(app_client.get("/raises"), 500, "internal_error")
