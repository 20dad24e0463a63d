"""ContactSerializer builds its output by hand for speed; it must equal DRF's generic output."""

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework import serializers

from contacts.serializers import ContactInputSerializer, ContactSerializer, contact_input_plain
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


# --- POST /contacts input: the plain input's shortcut --------------------------------------------
TEXT = st.one_of(
    st.text(max_size=90),
    st.sampled_from(["", " ", "Ada", " Ada", "Ada ", "a\x00b", "\ud800", "x" * 40, "x" * 41, "ü" * 80]),
)
EMAILS = st.one_of(
    st.emails().filter(lambda e: len(e) <= 100),
    st.sampled_from(["", " a@example.com", "a@example.com ", "not-an-email", "a@b", "x" * 75 + "@e.co", "A@Ex.COM"]),
)
VALUES = st.one_of(TEXT, st.integers(), st.none(), st.booleans())


@given(
    email=st.one_of(EMAILS, VALUES),
    fields=st.dictionaries(st.sampled_from(["first_name", "last_name", "phone", "company", "job_title"]), VALUES),
    custom=st.one_of(st.just(...), st.dictionaries(st.text(max_size=5), st.integers()), st.lists(st.integers())),
    extra=st.one_of(st.just({}), st.just({"unknown": 1}), st.just({"id": "x"})),
    no_email=st.booleans(),
)
@settings(max_examples=400, deadline=None)
def test_the_plain_input_shortcut_validates_as_the_serializer_does(email, fields, custom, extra, no_email):
    data = {**({} if no_email else {"email": email}), **fields, **extra}
    if custom is not ...:
        data["custom"] = custom
    serializer = ContactInputSerializer(data=data)
    valid = serializer.is_valid()

    shortcut = contact_input_plain(data)

    if shortcut is not None:  # taken only for input the serializer accepts, with the same result
        assert valid
        assert shortcut == dict(serializer.validated_data)


def test_the_plain_input_shortcut_takes_the_usual_request():
    data = {"email": "ada@example.com", "first_name": "Ada", "last_name": "Lovelace", "phone": "+44 20",
            "company": "Analytical Engines", "job_title": "", "custom": {"tier": "gold"}}  # fmt: skip

    assert contact_input_plain(data) == data
