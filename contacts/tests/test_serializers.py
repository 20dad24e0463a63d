"""ContactSerializer builds its output by hand for speed; it must equal DRF's generic output."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from rest_framework import serializers

from contacts.serializers import ContactSerializer
from contacts.tests.factories import ContactFactory
from providers.models import LinkStatus, ProviderLink

pytestmark = pytest.mark.django_db


def generic(contact, **context) -> dict:
    serializer = ContactSerializer(contact, context=context)
    return serializers.ModelSerializer.to_representation(serializer, contact)


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 3, 1, 12, 30, 5, 123456, tzinfo=UTC),
        datetime(2026, 3, 1, 12, 30, 5, tzinfo=UTC),  # no microseconds
        datetime(2026, 3, 1, 14, 30, 5, tzinfo=timezone(timedelta(hours=2))),  # another offset
    ],
)
def test_the_hand_built_output_equals_the_generic_one(connected, moment):
    contact = ContactFactory(
        first_name="Zoë", company="Ünïcode GmbH", custom={"tier": "gold", "seats": 4.5, "vip": True}
    )
    ProviderLink.objects.create(
        contact=contact, provider="hubspot", status=LinkStatus.SYNCED, external_id="42", synced_version=1,
        synced_at=moment,
    )  # fmt: skip
    contact.created_at = contact.updated_at = moment

    fast = ContactSerializer(contact).data

    assert fast == generic(contact)
    assert list(fast) == list(ContactSerializer.Meta.fields)
    assert fast["created_at"] == generic(contact)["created_at"]
    assert fast["custom"] == {"tier": "gold", "seats": 4.5, "vip": True}
    assert fast["sync"]["hubspot"]["status"] == "synced"
    assert fast["sync"]["salesforce"]["status"] == "pending"


def test_many_and_known_links_give_the_same_as_the_generic_path(connected):
    contacts = ContactFactory.create_batch(3, custom={"tier": "gold"})

    fast = ContactSerializer(contacts, many=True, context={"links": ()}).data

    assert fast == [generic(contact, links=()) for contact in contacts]
