"""Custom values on contacts: carried by every read and write, validated against their field, never coerced."""

import pytest
from django.db import connection

from contacts.models import Contact
from contacts.selectors import contact_list
from contacts.tests.factories import ContactFactory, CustomFieldFactory
from providers.models import LinkStatus, ProviderLink
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fields():
    CustomFieldFactory(key="tier", type="enum", options=["gold", "silver"])
    CustomFieldFactory(key="seats", type="number")
    CustomFieldFactory(key="vip", type="boolean")
    CustomFieldFactory(key="renewal", type="date")
    CustomFieldFactory(key="last_call", type="datetime")
    CustomFieldFactory(key="region", type="string", max_length=5)


VALID = {
    "tier": "gold", "seats": 40, "vip": False, "renewal": "2026-03-01", "last_call": "2026-03-01T12:30:00Z",
    "region": "EMEA",
}  # fmt: skip


def test_a_created_contact_carries_its_custom_values_everywhere(api_client):
    created = api_client.post("/contacts", {"email": "ada@example.com", "custom": VALID}, format="json")

    assert created.status_code == 201, created.content
    assert created.json()["custom"] == VALID
    contact = Contact.objects.get()
    assert contact.custom == VALID
    assert {f"custom.{key}" for key in VALID} <= set(contact.field_times)
    assert api_client.get(f"/contacts/{contact.pk}").json()["custom"] == VALID
    assert api_client.get("/contacts").json()["results"][0]["custom"] == VALID
    assert set(contact.synced_values()) == {"email", "first_name", "last_name", "phone", "company", "job_title"}


def test_a_contact_without_custom_values_reads_an_empty_object(api_client):
    created = api_client.post("/contacts", {"email": "ada@example.com"}, format="json")

    assert created.json()["custom"] == {}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("seats", "40"),  # never coerced
        ("seats", True),
        ("seats", [1]),
        ("seats", 10**400),  # beyond a float; JSON allows it, Python parses it, no CRM holds it
        ("region", 12),
        ("region", "toolong"),
        ("vip", 1),
        ("vip", "true"),
        ("renewal", "2026-3-1"),
        ("renewal", "2026-02-30"),
        ("renewal", "2026-03-01T00:00:00Z"),
        ("renewal", 20260301),
        ("last_call", "2026-03-01T12:30:00"),  # no time zone
        ("last_call", "2026-03-01"),
        ("last_call", "yesterday"),
        ("tier", "platinum"),
        ("tier", "Gold"),
        ("tier", 1),
        ("region", "a\x00b"),  # PostgreSQL cannot store NUL
        ("nickname", "Ada"),  # no such field
        ("ti\x00er", "gold"),
    ],
)
def test_a_value_that_does_not_fit_its_field_is_a_400_naming_it(api_client, key, value):
    response = api_client.post("/contacts", {"email": "ada@example.com", "custom": {key: value}}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert list(body["details"]) == [f"custom.{key}"]
    assert not Contact.objects.exists()


@pytest.mark.parametrize("custom", [["tier"], "gold", 1])
def test_custom_must_be_an_object(api_client, custom):
    response = api_client.post("/contacts", {"email": "ada@example.com", "custom": custom}, format="json")

    assert "custom" in assert_error(response, 400, "validation_error")["details"]


@pytest.mark.parametrize("value", ["2026-03-01T12:30:00+02:00", "2026-03-01T12:30:00.123456Z", "2026-03-01T12:30Z"])
def test_iso_date_times_with_a_zone_are_accepted_as_sent(api_client, value):
    response = api_client.post("/contacts", {"email": "a@example.com", "custom": {"last_call": value}}, format="json")

    assert response.status_code == 201, response.content
    assert response.json()["custom"] == {"last_call": value}


def test_a_bad_value_in_an_update_changes_nothing(api_client):
    contact = ContactFactory(custom={"seats": 3})

    for method in (api_client.patch, api_client.put):
        response = method(f"/contacts/{contact.pk}", {"email": contact.email, "custom": {"seats": "4"}}, format="json")
        assert assert_error(response, 400, "validation_error")["details"] == {"custom.seats": ["Not a valid number."]}
    contact.refresh_from_db()
    assert (contact.custom, contact.version) == ({"seats": 3}, 1)


def test_patch_merges_custom_keys_and_null_removes_one(api_client):
    contact = ContactFactory(custom={"tier": "gold", "seats": 3, "vip": True})

    response = api_client.patch(
        f"/contacts/{contact.pk}", {"custom": {"seats": 4, "vip": None, "region": "EU"}}, format="json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["custom"] == {"tier": "gold", "seats": 4, "region": "EU"}
    assert response.json()["version"] == 2
    contact.refresh_from_db()
    assert contact.custom == {"tier": "gold", "seats": 4, "region": "EU"}
    assert {"custom.seats", "custom.vip", "custom.region"} <= set(contact.field_times)
    assert "custom.tier" not in contact.field_times  # unchanged: its time stays what it was (none here)


def test_patch_without_custom_keeps_the_custom_values(api_client):
    contact = ContactFactory(custom={"tier": "gold"})

    response = api_client.patch(f"/contacts/{contact.pk}", {"first_name": "Ada"}, format="json")

    assert response.json()["custom"] == {"tier": "gold"}


def test_put_replaces_the_custom_values(api_client):
    contact = ContactFactory(custom={"tier": "gold", "seats": 3})

    response = api_client.put(
        f"/contacts/{contact.pk}", {"email": contact.email, "custom": {"seats": 3}}, format="json"
    )
    assert response.json()["custom"] == {"seats": 3}
    response = api_client.put(f"/contacts/{contact.pk}", {"email": contact.email}, format="json")
    assert response.json()["custom"] == {}


def test_only_a_real_change_bumps_the_version(api_client):
    contact = ContactFactory(custom={"tier": "gold", "seats": 3})
    url = f"/contacts/{contact.pk}"

    same = api_client.patch(url, {"custom": {"tier": "gold", "seats": 3, "vip": None}}, format="json")
    assert same.json()["version"] == 1
    changed = api_client.patch(url, {"custom": {"seats": 3.5}}, format="json")
    assert changed.json()["version"] == 2
    assert changed["ETag"] == '"2"'
    contact.refresh_from_db()
    assert contact.custom == {"tier": "gold", "seats": 3.5}


def test_a_custom_change_marks_the_crms_pending(api_client, connected, enqueued, django_capture_on_commit_callbacks):
    contact = ContactFactory(custom={"tier": "gold"})
    for provider in ("hubspot", "salesforce"):
        ProviderLink.objects.create(
            contact=contact, provider=provider, status=LinkStatus.SYNCED, external_id="1", synced_version=1
        )

    with django_capture_on_commit_callbacks(execute=True):
        response = api_client.patch(f"/contacts/{contact.pk}", {"custom": {"tier": "silver"}}, format="json")

    assert response.status_code == 200
    assert set(ProviderLink.objects.values_list("status", flat=True)) == {LinkStatus.PENDING}
    assert enqueued
    assert set(enqueued[-1]) == {"hubspot", "salesforce"}


def test_the_batch_endpoint_takes_custom_values(api_client):
    items = [
        {"email": "a@example.com", "custom": {"tier": "gold", "seats": 1}},
        {"email": "b@example.com"},
        {"email": "c@example.com", "custom": {"vip": True, "region": None}},
    ]

    response = api_client.post("/contacts/batch", {"contacts": items}, format="json")

    assert response.status_code == 201, response.content
    assert [c["custom"] for c in response.json()["contacts"]] == [{"tier": "gold", "seats": 1}, {}, {"vip": True}]
    stored = {c.email: c.custom for c in Contact.objects.all()}
    assert stored == {
        "a@example.com": {"tier": "gold", "seats": 1},
        "b@example.com": {},
        "c@example.com": {"vip": True},
    }


def test_the_batch_names_each_bad_custom_value_by_position_and_creates_nothing(api_client):
    items = [
        {"email": "a@example.com", "custom": {"tier": "gold"}},
        {"email": "b@example.com", "custom": {"tier": "platinum"}},
        {"email": "c@example.com", "custom": {"nope": 1}},
    ]

    response = api_client.post("/contacts/batch", {"contacts": items}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert body["details"] == {
        "contacts": {"1": {"custom.tier": ["Not one of the options: gold, silver."]},
                     "2": {"custom.nope": ["Unknown custom field."]}},
    }  # fmt: skip
    assert not Contact.objects.exists()


def test_the_list_filters_by_custom_values(api_client):
    gold = ContactFactory(custom={"tier": "gold", "seats": 40, "vip": True})
    ContactFactory(custom={"tier": "gold", "seats": 4})
    ContactFactory(custom={"tier": "silver", "seats": 40})
    ContactFactory(custom={"tier": "gold", "seats": 40}, deleted=True)

    response = api_client.get("/contacts?custom.tier=gold&custom.seats=40")
    assert [c["id"] for c in response.json()["results"]] == [str(gold.pk)]
    assert len(api_client.get("/contacts?custom.tier=gold").json()["results"]) == 2
    assert len(api_client.get("/contacts?custom.vip=true").json()["results"]) == 1


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("custom.nope=1", "custom.nope"),
        ("custom.seats=many", "custom.seats"),
        ("custom.seats=%2240%22", "custom.seats"),
        ("custom.tier=platinum", "custom.tier"),
        ("custom.region=a%00b", "custom.region"),
        ("custom.ti%00er=gold", "custom.ti\x00er"),
    ],
)
def test_a_filter_on_an_unknown_field_or_an_unfit_value_is_a_400(api_client, query, named):
    body = assert_error(api_client.get(f"/contacts?{query}"), 400, "validation_error")

    assert list(body["details"]) == [named]


def test_the_custom_filter_is_served_by_the_gin_index(api_client):
    Contact.objects.bulk_create(
        [Contact(email=f"p{i}@example.com", custom={"tier": "gold" if i % 50 == 0 else "silver", "seats": i})
         for i in range(2000)]
    )  # fmt: skip

    queryset = contact_list(custom={"tier": "gold", "seats": "100"})
    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")  # so the plan does not depend on table statistics
        cursor.execute("ANALYZE contacts_contact")
        sql, params = queryset.query.sql_with_params()
        cursor.execute(f"EXPLAIN {sql}", params)
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "contact_custom_gin" in plan, plan
    assert "@>" in plan
    assert [c.email for c in queryset] == ["p100@example.com"]
