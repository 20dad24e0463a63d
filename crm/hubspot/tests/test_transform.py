"""Field mapping and time parsing on HubSpot's documented payloads (pure: no I/O)."""

from datetime import UTC, datetime

import pytest

from crm.hubspot import transform
from crm.hubspot.tests.conftest import load_payload


def test_create_response_maps_every_synced_field_and_drops_hubspot_extras():
    obj = load_payload("contact_create_response.json")

    change = transform.object_to_change(obj)

    assert change.external_id == "112117738673"
    assert change.values == {
        "email": "t@t.com",
        "first_name": "João",
        "last_name": "da Silva",
        "phone": "",
        "company": "",
        "job_title": "",
    }
    assert change.occurred_at == datetime(2025, 4, 7, 20, 51, 21, 314000, tzinfo=UTC)
    assert change.deleted is False


def test_null_empty_and_missing_properties_all_read_as_empty_strings():
    values = transform.from_hubspot(load_payload("contact_read_with_nulls.json")["properties"])

    assert values["company"] == ""  # null
    assert values["job_title"] == ""  # ""
    assert values["phone"] == ""  # null
    assert transform.from_hubspot({}) == dict.fromkeys(transform.FIELD_MAP, "")


def test_to_hubspot_sends_only_present_fields_and_empty_string_to_clear():
    assert transform.to_hubspot({"first_name": "Ada", "job_title": ""}) == {"firstname": "Ada", "jobtitle": ""}
    assert transform.to_hubspot({"phone": None}) == {"phone": ""}
    # Fields HubSpot has no property for are not sent at all.
    assert transform.to_hubspot({"favourite_colour": "green"}) == {}


def test_mapping_round_trips_every_field():
    internal = {
        "email": "a@b.com",
        "first_name": "A",
        "last_name": "B",
        "phone": "+1 555",
        "company": "C",
        "job_title": "D",
    }

    assert transform.from_hubspot(transform.to_hubspot(internal)) == internal
    assert {transform.field_for_property(p) for p in transform.FIELD_MAP.values()} == set(internal)
    assert transform.field_for_property("hs_lead_status") is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("2025-04-07T20:51:21.314Z", datetime(2025, 4, 7, 20, 51, 21, 314000, tzinfo=UTC)),
        ("2025-04-07T22:51:21.314+02:00", datetime(2025, 4, 7, 20, 51, 21, 314000, tzinfo=UTC)),
        (1742077073905, datetime(2025, 3, 15, 22, 17, 53, 905000, tzinfo=UTC)),
        ("1742077073905", datetime(2025, 3, 15, 22, 17, 53, 905000, tzinfo=UTC)),
        ("2024-01-01T12:00:00", datetime(2024, 1, 1, 12, tzinfo=UTC)),
        ("", None),
        (None, None),
    ],
)
def test_parse_time_reads_iso_and_epoch_milliseconds_as_aware_utc(raw, expected):
    assert transform.parse_time(raw) == expected


def test_parse_time_refuses_garbage():
    with pytest.raises(ValueError):
        transform.parse_time("yesterday")


def test_epoch_ms_is_exact_to_the_millisecond():
    # Float arithmetic would turn .905 into .904 for this value.
    moment = transform.parse_time(1742077073905)

    assert transform.to_epoch_ms(moment) == 1742077073905
    assert transform.to_epoch_ms(datetime(2024, 1, 1)) == 1704067200000  # naive = UTC


def test_search_results_with_epoch_ms_and_iso_times_compare_equal():
    page = load_payload("search_page.json")

    changes = [transform.object_to_change(obj) for obj in page["results"]]

    assert changes[0].occurred_at == changes[1].occurred_at == datetime(2024, 1, 1, 12, 0, 0, 500000, tzinfo=UTC)


def test_ids_sort_numerically():
    assert sorted(["1000", "999", "10001"], key=transform.id_order) == ["999", "1000", "10001"]


def test_emails_are_compared_trimmed_and_lower_cased():
    assert transform.normalise_email("  Jane@Example.COM ") == "jane@example.com"
    assert transform.normalise_email(None) == ""
