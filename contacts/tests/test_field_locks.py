"""A field's definition and the contact writes that use it never interleave: no unfit value is stored."""

import threading
import time

import pytest
from django.db import connection, connections, transaction

from contacts.field_services import FieldValuesConflict, custom_field_delete, custom_field_update
from contacts.models import Contact, CustomField
from contacts.services import contact_create
from contacts.tests.factories import CustomFieldFactory

pytestmark = pytest.mark.django_db(transaction=True)


def in_thread(call) -> tuple[threading.Thread, dict]:
    outcome: dict = {}

    def run() -> None:
        try:
            outcome["result"] = call()
        except Exception as exc:  # the test asserts on it
            outcome["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def wait_for_a_blocked_backend(outcome: dict, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    with connections["default"].cursor() as cursor:
        while True:
            cursor.execute("SELECT pg_stat_clear_snapshot()")  # else the transaction sees one frozen snapshot
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            if cursor.fetchone()[0]:
                return
            assert time.monotonic() < deadline, f"the field change never waited for the contact write: {outcome}"
            time.sleep(0.01)


def test_removing_an_option_waits_for_a_write_using_it_then_refuses():
    CustomFieldFactory(key="tier", type="enum", options=["gold", "silver"])

    with transaction.atomic():
        contact_create(data={"email": "ada@example.com", "custom": {"tier": "gold"}})
        thread, outcome = in_thread(lambda: custom_field_update(key="tier", changes={"options": ["silver"]}))
        wait_for_a_blocked_backend(outcome)
    thread.join(timeout=10)

    assert isinstance(outcome.get("error"), FieldValuesConflict), outcome
    assert CustomField.objects.get(key="tier").options == ["gold", "silver"]
    assert Contact.objects.get().custom == {"tier": "gold"}


def test_a_purge_waits_for_a_write_using_the_field_and_removes_its_value_too():
    CustomFieldFactory(key="tier", type="enum", options=["gold"])

    with transaction.atomic():
        contact_create(data={"email": "ada@example.com", "custom": {"tier": "gold"}})
        thread, outcome = in_thread(lambda: custom_field_delete(key="tier", purge=True))
        wait_for_a_blocked_backend(outcome)
    thread.join(timeout=10)

    assert outcome == {"result": 1}
    assert not CustomField.objects.exists()
    assert Contact.objects.get().custom == {}
    assert connection.is_usable()
