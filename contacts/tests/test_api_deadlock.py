"""An API write that PostgreSQL picks as a deadlock's victim runs once more instead of failing."""

import threading
import time

import pytest
from django.db import connection, transaction

from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from providers.models import ProviderLink
from providers.services import links_mark_pending

pytestmark = pytest.mark.django_db(transaction=True)


def _someone_waits_on_a_lock(deadline_s: float = 15.0) -> None:
    deadline = time.monotonic() + deadline_s
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted AND pid <> pg_backend_pid()")
            if cursor.fetchone()[0]:
                return
            time.sleep(0.01)
    raise AssertionError("the API request never waited on the link lock")


def test_a_patch_that_loses_a_deadlock_is_retried_and_answers_200(api_client, hubspot, enqueued):
    contact = ContactFactory()
    with transaction.atomic():
        links_mark_pending(contact=contact)
    holding, errors = threading.Event(), []

    def other_transaction() -> None:
        """Locks the contact's link, waits for the PATCH to queue behind it, then wants the contact
        the PATCH holds: a cycle. Its long deadlock_timeout makes PostgreSQL fail the PATCH."""
        try:
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute("SET LOCAL deadlock_timeout = '20s'")
                list(ProviderLink.objects.select_for_update().filter(contact=contact))
                holding.set()
                _someone_waits_on_a_lock()
                list(Contact.objects.select_for_update().filter(pk=contact.pk))
        except Exception as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=other_transaction)
    thread.start()
    assert holding.wait(15)

    response = api_client.patch(f"/contacts/{contact.pk}", {"first_name": "Augusta"}, format="json")
    thread.join(30)

    assert response.status_code == 200, response.content
    assert errors == []
    contact.refresh_from_db()
    assert contact.first_name == "Augusta"
    assert contact.version == 2
