"""syncroot.bulk_insert.rows_insert: the same rows as the ORM's bulk_create, column arrays instead
of one parameter per value, and never a value cut to fit."""

import pytest
from django.db import DataError, transaction
from django.forms.models import model_to_dict
from django.utils import timezone

from contacts.models import MAX_LENGTHS, Contact
from providers.models import FieldChange, LinkStatus, ProviderLink
from syncroot.bulk_insert import rows_insert

pytestmark = pytest.mark.django_db

STAMPED = {"created_at", "updated_at"}  # auto_now(_add): each insert's own time


def _contacts(tag: str) -> list[Contact]:
    return [
        Contact(email=f"{tag}-{i}@example.com", first_name=f"Ada {i}", custom={"tier": "gold"} if i % 2 else {})
        for i in range(3)
    ] + [Contact(email=f"{tag}-plain@example.com", field_times={"email": "2026-01-01T00:00:00+00:00"})]


def _rows(model, objs, *, skip=frozenset()) -> list[dict]:
    stored = {row.pk: row for row in model.objects.filter(pk__in=[obj.pk for obj in objs])}
    return [{k: v for k, v in model_to_dict(stored[obj.pk]).items() if k not in skip | {"id"}} for obj in objs]


def test_contacts_are_stored_as_bulk_create_stores_them():
    ours, orms = _contacts("ours"), _contacts("orm")
    rows_insert(ours)
    Contact.objects.bulk_create(orms)

    mine, theirs = _rows(Contact, ours, skip=STAMPED | {"email"}), _rows(Contact, orms, skip=STAMPED | {"email"})
    assert mine == theirs
    assert [row["custom"] for row in mine] == [{}, {"tier": "gold"}, {}, {}]  # varying and constant columns alike
    stored = Contact.objects.get(pk=ours[0].pk)
    assert stored.created_at is not None  # pre_save applied
    assert stored.created_at == ours[0].created_at
    assert not ours[0]._state.adding  # saved: a later save() updates it


def test_links_with_an_auto_key_and_one_row_each_way():
    contacts = [Contact(email=f"link-{i}@example.com") for i in range(2)]
    rows_insert(contacts)
    now = timezone.now()
    links = [
        ProviderLink(contact=c, provider="hubspot", external_id=str(i), status=LinkStatus.PENDING, pending_since=now)
        for i, c in enumerate(contacts)
    ]
    rows_insert(links)
    rows_insert([ProviderLink(contact=contacts[0], provider="salesforce", field_hashes={"email": "h"})])

    stored = ProviderLink.objects.filter(contact__in=contacts).order_by("provider", "external_id")
    assert [(link.provider, link.external_id, link.status) for link in stored] == [
        ("hubspot", "0", LinkStatus.PENDING),
        ("hubspot", "1", LinkStatus.PENDING),
        ("salesforce", None, LinkStatus.PENDING),
    ]
    assert stored[0].pending_since == now
    assert stored[2].field_hashes == {"email": "h"}


def test_rows_that_are_all_alike_are_each_inserted():
    contact = Contact(email="alike@example.com")
    rows_insert([contact])
    at = timezone.now()
    rows_insert([FieldChange(contact=contact, field="email", value="x", source="api", changed_at=at) for _ in range(3)])

    assert FieldChange.objects.filter(contact=contact).count() == 3


def test_a_value_too_long_is_refused_not_cut():
    fits = Contact(email="fits@example.com", first_name="A")
    too_long = Contact(email="long@example.com", first_name="x" * (MAX_LENGTHS["first_name"] + 1))

    with pytest.raises(DataError), transaction.atomic():
        rows_insert([fits, too_long])

    assert not Contact.objects.filter(email__in=["fits@example.com", "long@example.com"]).exists()


def test_on_conflict_is_appended():
    contact = Contact(email="twice@example.com")
    rows_insert([contact])
    again = ProviderLink(contact=contact, provider="hubspot", external_id="first")
    rows_insert([again])

    rows_insert(
        [ProviderLink(contact=contact, provider="hubspot", external_id="second")],
        on_conflict="ON CONFLICT (contact_id, provider) DO NOTHING",
    )

    assert list(ProviderLink.objects.filter(contact=contact).values_list("external_id", flat=True)) == ["first"]
