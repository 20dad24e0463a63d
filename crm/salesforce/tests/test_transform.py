"""Field mapping, datetimes and SOQL quoting: pure functions, no I/O."""

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from crm.salesforce.transform import (
    LAST_NAME_PLACEHOLDER,
    from_epoch_ms,
    from_salesforce,
    parse_datetime,
    soql_datetime,
    soql_in,
    soql_quote,
    to_salesforce,
)

PAYLOADS = Path(__file__).parent / "payloads"
FULL = {
    "email": "ada@example.com",
    "first_name": "Ada",
    "last_name": "Lovelace",
    "phone": "+44 20 7946 0000",
    "company": "Analytical Engines",
    "job_title": "Programmer",
}


def test_to_salesforce_maps_every_field_but_company():
    assert to_salesforce(FULL, creating=True) == {
        "Email": "ada@example.com",
        "FirstName": "Ada",
        "LastName": "Lovelace",
        "Phone": "+44 20 7946 0000",
        "Title": "Programmer",
    }


def test_create_without_last_name_sends_the_placeholder():
    assert to_salesforce({"email": "a@x.com"}, creating=True) == {"Email": "a@x.com", "LastName": LAST_NAME_PLACEHOLDER}
    assert to_salesforce({"email": "a@x.com", "last_name": "  "}, creating=True)["LastName"] == LAST_NAME_PLACEHOLDER


def test_update_sends_only_present_fields_and_null_to_clear():
    body = to_salesforce({"phone": "", "job_title": "CTO"}, creating=False)
    assert body == {"Phone": None, "Title": "CTO"}


def test_update_clearing_last_name_sends_the_placeholder_not_null():
    assert to_salesforce({"last_name": ""}, creating=False) == {"LastName": LAST_NAME_PLACEHOLDER}


def test_from_salesforce_maps_nulls_to_empty_and_reads_account_name():
    records = json.loads((PAYLOADS / "query_contacts.json").read_text())["records"]
    assert from_salesforce(records[0]) == {
        "email": "j@x.com",
        "first_name": "",
        "last_name": "Jones",
        "phone": "",
        "job_title": "CTO",
        "company": "Acme",
    }
    # Placeholder last name and a private contact (no Account) map back to empty values.
    assert from_salesforce(records[1])["last_name"] == ""
    assert from_salesforce(records[1])["company"] == ""


def test_from_salesforce_leaves_company_to_the_caller_when_only_account_id_is_known():
    values = from_salesforce({"Id": "003", "AccountId": "0015g00000XyZaBAAV", "Email": "a@x.com"})
    assert values == {"email": "a@x.com"}


def test_round_trip_of_the_last_name_placeholder():
    body = to_salesforce({**FULL, "last_name": ""}, creating=True)
    assert from_salesforce(body)["last_name"] == ""


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-01-01T12:00:00.000+0000", datetime(2024, 1, 1, 12, 0, tzinfo=UTC)),
        ("2024-01-01T12:00:00.250Z", datetime(2024, 1, 1, 12, 0, 0, 250000, tzinfo=UTC)),
        ("2024-01-01T14:00:00.000+02:00", datetime(2024, 1, 1, 12, 0, tzinfo=UTC)),
        ("2024-01-01T12:00:00", datetime(2024, 1, 1, 12, 0, tzinfo=UTC)),
    ],
)
def test_parse_datetime_gives_aware_utc(text, expected):
    parsed = parse_datetime(text)
    assert parsed == expected
    assert parsed.utcoffset().total_seconds() == 0


@pytest.mark.parametrize("text", [None, "", "yesterday", "2024-13-01T00:00:00Z"])
def test_parse_datetime_refuses_garbage(text):
    assert parse_datetime(text) is None


def test_epoch_ms_and_soql_literals():
    assert from_epoch_ms(1704110400000) == datetime(2024, 1, 1, 12, 0, tzinfo=UTC)
    assert from_epoch_ms("1704110400000") is None
    assert soql_datetime(datetime(2024, 1, 1, 12, 0, 5, 999000, tzinfo=UTC)) == "2024-01-01T12:00:05Z"


def test_soql_quote_escapes_quotes_backslashes_and_control_characters():
    assert soql_quote("O'Brien & Sons") == r"'O\'Brien & Sons'"
    assert soql_quote("back\\slash") == r"'back\\slash'"
    assert soql_quote("x' OR Name != '") == r"'x\' OR Name != \''"
    assert soql_quote('line\nbreak "q"') == r"'line\nbreak \"q\"'"
    assert soql_in(["a", "b'c"]) == r"('a', 'b\'c')"
