"""The change log's rows, written by one INSERT of its own: values as the JSONField keeps them."""

import pytest
from django.db.models import Q

from contacts.tests.factories import ContactFactory
from providers.models import FieldChange
from providers.provenance import changes_record, changes_record_many

pytestmark = pytest.mark.django_db


def test_values_of_every_type_come_back_as_they_went_in():
    contact = ContactFactory(first_name='Zoë "Z"', custom={"seats": 4.5, "vip": False, "tier": "gold", "n": 0})

    changes_record(contact=contact, fields=["first_name", "seats", "vip", "tier", "n", "gone"], source="api")

    stored = dict(FieldChange.objects.filter(contact=contact).values_list("field", "value"))
    assert stored == {"first_name": 'Zoë "Z"', "seats": 4.5, "vip": False, "tier": "gold", "n": 0, "gone": None}
    # A removed custom value is SQL NULL, as the JSONField stores None, not JSON null.
    assert FieldChange.objects.get(Q(value__isnull=True), contact=contact).field == "gone"
    assert set(FieldChange.objects.filter(contact=contact).values_list("source", flat=True)) == {"api"}


def test_a_new_contact_logs_every_field_holding_a_value():
    first, second = ContactFactory(phone="", custom={"tier": "gold"}), ContactFactory(phone="+1 555")

    changes_record_many(contacts=[first, second], fields=None, source="backfill")

    assert "phone" not in set(FieldChange.objects.filter(contact=first).values_list("field", flat=True))
    assert FieldChange.objects.get(contact=first, field="tier").value == "gold"
    assert FieldChange.objects.get(contact=second, field="phone").value == "+1 555"
