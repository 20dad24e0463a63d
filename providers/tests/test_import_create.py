"""The import's fast path: records SyncRoot knows nothing of, created with multi-row INSERTs.

Service level, on the real database: what `records_create_many` writes must be what `change_apply`
writes for the same record, in a number of statements that does not grow with the records.
"""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

import providers.import_create
import providers.services
from contacts.models import Contact
from contacts.tests.factories import ContactFactory
from crm import registry
from crm.base import InboundChange
from providers.import_create import records_create_many
from providers.inbound import CREATED, change_apply
from providers.lifecycle import contact_erase
from providers.models import ChangeSource, FieldChange, ProviderLink, RecordIssue

pytestmark = pytest.mark.django_db

WHEN = timezone.now() - timedelta(days=3)


@pytest.fixture(autouse=True)
def connected(settings, monkeypatch) -> list[list[str]]:
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "x"}
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "x", "instance_url": "http://127.0.0.1:1"}
    registry.reset()
    enqueued: list[list[str]] = []
    monkeypatch.setattr(providers.services, "enqueue_forward", lambda *, providers: enqueued.append(providers))
    return enqueued


def record(n: int, prefix: str = "new", **values: str) -> InboundChange:
    return InboundChange(
        external_id=f"{prefix}{n}", occurred_at=WHEN + timedelta(seconds=n),
        values={"email": f"{prefix}{n}@example.com", "first_name": f"First{n}", "last_name": "Last",
                "job_title": "", **values},
    )  # fmt: skip


def rows(contact: Contact) -> dict:
    """Everything the apply wrote for one contact, without ids, clocks and the email's own words."""
    contact.refresh_from_db()
    links = {
        link.provider: (link.status, link.synced_version, {f: h for f, h in link.field_hashes.items() if f != "email"},
                        link.field_seen_at, link.issues, link.pending_since is not None)
        for link in ProviderLink.objects.filter(contact=contact)
    }  # fmt: skip
    changes = sorted(FieldChange.objects.filter(contact=contact).values_list("field", "source"))
    values = {f: getattr(contact, f) for f in ("first_name", "last_name", "phone", "company", "job_title")}
    return {"values": values, "version": contact.version, "field_times": contact.field_times, "custom": contact.custom,
            "links": links, "changes": changes}  # fmt: skip


def test_the_rows_written_are_those_change_apply_writes(connected, django_capture_on_commit_callbacks):
    one_by_one = record(1, prefix="slow", company="Acme", phone="+15550001")
    fast = record(1, prefix="fast", company="Acme", phone="+15550001")
    fast.field_times = one_by_one.field_times = {"company": WHEN + timedelta(seconds=30)}
    RecordIssue.objects.create(provider="hubspot", external_id="fast1", code="no_email", message="had none")

    assert change_apply(provider="hubspot", change=one_by_one, source=ChangeSource.BACKFILL) == CREATED
    with django_capture_on_commit_callbacks(execute=True):
        created, rest = records_create_many(
            provider="hubspot", changes=[fast], known_ids=(), source=ChangeSource.BACKFILL
        )

    assert (created, rest) == ([fast], [])
    slow_contact = Contact.objects.get(email="slow1@example.com")
    fast_contact = Contact.objects.get(email="fast1@example.com")
    assert rows(fast_contact) == rows(slow_contact)
    assert rows(fast_contact)["links"]["salesforce"][0] == "pending"  # on to the other CRM
    assert ProviderLink.objects.get(contact=fast_contact, provider="hubspot").external_id == "fast1"
    assert not RecordIssue.objects.exists()  # the record's old issue went, as change_apply clears it
    assert ["salesforce"] in connected


def test_a_chunk_is_written_in_the_same_few_statements_whatever_its_size():
    def statements(count: int, prefix: str) -> int:
        changes = [record(n, prefix=prefix) for n in range(count)]
        with CaptureQueriesContext(connection) as queries:
            created, _ = records_create_many(provider="hubspot", changes=changes, known_ids=(), source="backfill")
        assert len(created) == count
        return len(queries)

    statements(1, "warm")  # the CRM's mappings read once
    assert statements(200, "big") == statements(5, "small") <= 9  # two lookups, five INSERTs or DELETEs, a savepoint
    assert Contact.objects.count() == 206
    assert ProviderLink.objects.filter(provider="salesforce", status="pending").count() == 206


def test_records_that_need_a_person_or_a_match_are_left_to_the_apply_one_by_one():
    ContactFactory(email="Held@example.com")
    erased = ContactFactory(email="gone@example.com")
    contact_erase(contact_id=erased.pk)
    changes = [
        record(1),
        record(2, email="held@example.com"),  # matched by email: filled in, never created
        record(3, email="gone@example.com"),  # erased on request: never imported again
        record(4, email="twin@example.com"),
        record(5, email="TWIN@example.com"),  # two records, one person: the first wins, in order
        record(6, last_name="x" * 200),  # a value SyncRoot cannot hold: an issue for a person
        record(7, email=""),
        InboundChange(external_id="new8", deleted=True),
        record(9),  # linked already
    ]

    created, rest = records_create_many(provider="hubspot", changes=changes, known_ids={"new9"}, source="backfill")

    assert [c.external_id for c in created] == ["new1"]
    assert {c.external_id for c in rest} == {f"new{n}" for n in range(2, 10)}
    assert set(Contact.objects.filter(deleted_at=None).values_list("email", flat=True)) == {
        "Held@example.com", "new1@example.com",
    }  # fmt: skip


def test_an_email_taken_meanwhile_sends_the_whole_chunk_one_by_one(monkeypatch):
    """A live write took an email between the chunk's lookups and its INSERTs."""
    ContactFactory(email="new2@example.com")
    monkeypatch.setattr(providers.import_create, "_held", lambda emails: set())  # the lookup saw it free

    created, rest = records_create_many(
        provider="hubspot", changes=[record(1), record(2)], known_ids=(), source="backfill"
    )

    assert created == []
    assert [c.external_id for c in rest] == ["new1", "new2"]
    assert Contact.objects.count() == 1  # nothing of the chunk was kept
    assert not ProviderLink.objects.exists()
