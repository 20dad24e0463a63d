"""The SOQL subset: parsing, type checks, evaluation, projection, error shapes."""

from datetime import UTC, datetime

import pytest

from sandbox.salesforce_schema import OBJECTS, make_id
from sandbox.soql import SoqlError, parse

ACME = {"Id": make_id("001", 1), "Name": "Acme", "IsDeleted": False}
NOW = datetime(2024, 3, 10, 12, 0, tzinfo=UTC)


def _contact(number, email, last, *, account=None, day=1, first=None):
    return {
        "Id": make_id("003", number),
        "Email": email,
        "LastName": last,
        "FirstName": first,
        "AccountId": account,
        "IsDeleted": False,
        "SystemModstamp": datetime(2024, 3, day, 9, 30, tzinfo=UTC),
    }


ROWS = [
    _contact(1, "ada@example.com", "Lovelace", account=ACME["Id"], day=1, first="Ada"),
    _contact(2, "Grace@Example.com", "hopper", day=5),
    _contact(3, None, "Nobody", day=9),
    _contact(4, "o'brien_x@example.com", "O'Brien", account=ACME["Id"], day=10),
]


def _resolve(sobject, record_id):
    return ACME if sobject == "Account" and record_id == ACME["Id"] else None


def _render(spec, record, names):
    return {"type": spec.name, **{name: record.get(name) for name in names}}


def run(text):
    query = parse(text, OBJECTS, now=NOW)
    return [query.project(row, _resolve, _render) for row in query.run(ROWS, _resolve)]


def ids(text):
    return [row["Id"] for row in run(text)]


def error_of(text):
    with pytest.raises(SoqlError) as caught:
        parse(text, OBJECTS, now=NOW)
    return caught.value


def test_select_list_projects_fields_in_order_with_canonical_names():
    rows = run("select id, EMAIL, lastname from contact where lastname = 'LOVELACE'")
    assert rows == [{"type": "Contact", "Id": ROWS[0]["Id"], "Email": "ada@example.com", "LastName": "Lovelace"}]


def test_relationship_field_is_a_nested_record_or_null():
    rows = run("SELECT Id, Account.Name FROM Contact ORDER BY LastName")
    by_id = {row["Id"]: row["Account"] for row in rows}
    assert by_id[ROWS[0]["Id"]] == {"type": "Account", "Name": "Acme"}
    assert by_id[ROWS[1]["Id"]] is None


def test_email_equality_and_in_are_case_insensitive():
    assert ids("SELECT Id FROM Contact WHERE Email = 'GRACE@example.COM'") == [ROWS[1]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE Email IN ('ADA@EXAMPLE.COM', 'grace@example.com')") == [
        ROWS[0]["Id"],
        ROWS[1]["Id"],
    ]
    assert ids("SELECT Id FROM Contact WHERE Email NOT IN ('ada@example.com')") == [
        ROWS[1]["Id"],
        ROWS[2]["Id"],
        ROWS[3]["Id"],
    ]


def test_null_comparisons_and_not_equal_include_nulls():
    assert ids("SELECT Id FROM Contact WHERE Email = null") == [ROWS[2]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE Email != null") == [ROWS[0]["Id"], ROWS[1]["Id"], ROWS[3]["Id"]]
    assert ROWS[2]["Id"] in ids("SELECT Id FROM Contact WHERE Email <> 'ada@example.com'")


def test_datetime_literals_compare_by_instant_with_offsets():
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp > 2024-03-05T09:30:00Z") == [ROWS[2]["Id"], ROWS[3]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp >= 2024-03-05T11:30:00+02:00") == [
        ROWS[1]["Id"],
        ROWS[2]["Id"],
        ROWS[3]["Id"],
    ]
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp < 2024-03-05T09:30:00.000+0000") == [ROWS[0]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp <= 2024-03-01T09:30:00Z") == [ROWS[0]["Id"]]


def test_relative_date_literals_are_day_ranges():
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp = TODAY") == [ROWS[3]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp = YESTERDAY") == [ROWS[2]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE SystemModstamp = LAST_N_DAYS:5") == [
        ROWS[1]["Id"],
        ROWS[2]["Id"],
        ROWS[3]["Id"],
    ]


def test_like_wildcards_and_escaped_underscore():
    assert ids("SELECT Id FROM Contact WHERE LastName LIKE 'h%'") == [ROWS[1]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE Email LIKE '%\\_x@%'") == [ROWS[3]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE Email LIKE 'o_brien%'") == [ROWS[3]["Id"]]
    assert ids("SELECT Id FROM Contact WHERE Email LIKE 'o\\_brien%'") == []


def test_string_escapes_decode_quotes():
    assert ids("SELECT Id FROM Contact WHERE LastName = 'O\\'Brien'") == [ROWS[3]["Id"]]


def test_and_or_not_with_parentheses():
    text = (
        "SELECT Id FROM Contact WHERE (Email = 'ada@example.com' OR Email = null) "
        "AND NOT LastName = 'Nobody' AND IsDeleted = false"
    )
    assert ids(text) == [ROWS[0]["Id"]]


def test_id_filters_accept_15_and_18_character_ids():
    assert ids(f"SELECT Id FROM Contact WHERE Id = '{ROWS[1]['Id'][:15]}'") == [ROWS[1]["Id"]]
    assert ids(f"SELECT Id FROM Contact WHERE AccountId = '{ACME['Id']}'") == [ROWS[0]["Id"], ROWS[3]["Id"]]


def test_relationship_filter():
    assert ids("SELECT Id FROM Contact WHERE Account.Name = 'ACME'") == [ROWS[0]["Id"], ROWS[3]["Id"]]


def test_order_by_several_fields_with_null_placement_limit_and_offset():
    assert ids("SELECT Id FROM Contact ORDER BY Email") == [r["Id"] for r in (ROWS[2], ROWS[0], ROWS[1], ROWS[3])]
    assert ids("SELECT Id FROM Contact ORDER BY Email DESC") == [r["Id"] for r in (ROWS[3], ROWS[1], ROWS[0], ROWS[2])]
    assert ids("SELECT Id FROM Contact ORDER BY Email ASC NULLS LAST LIMIT 2") == [ROWS[0]["Id"], ROWS[1]["Id"]]
    assert ids("SELECT Id FROM Contact ORDER BY AccountId DESC NULLS LAST, SystemModstamp DESC LIMIT 2 OFFSET 1") == [
        ROWS[0]["Id"],
        ROWS[2]["Id"],
    ]


def test_count_query():
    query = parse("SELECT COUNT() FROM Contact WHERE Email != null", OBJECTS)
    assert query.count_only
    assert len(query.run(ROWS, _resolve)) == 3


def test_equality_filters_feed_index_lookups():
    query = parse("SELECT Id FROM Contact WHERE Email IN ('A@x.com','b@x.com') AND IsDeleted = false", OBJECTS)
    assert query.equality_filters() == [("Email", ("a@x.com", "b@x.com")), ("IsDeleted", (False,))]
    assert parse("SELECT Id FROM Contact WHERE Email = 'a@x.com' OR Email = 'b'", OBJECTS).equality_filters() == []


@pytest.mark.parametrize(
    ("text", "code", "detail"),
    [
        ("SELECT Id FORM Contact", "MALFORMED_QUERY", "unexpected token: 'FORM'"),
        ("SELECT Id FROM Contact LIMIT", "MALFORMED_QUERY", "unexpected token: '<EOF>'"),
        ("SELECT Id FROM Contact WHERE Email = 'a' AND Email = 'b' OR Email = 'c'", "MALFORMED_QUERY", "'OR'"),
        ("SELECT Id FROM Contact WHERE Email = 'a\\q'", "MALFORMED_QUERY", "Invalid string literal"),
        ("SELECT Id, id FROM Contact", "MALFORMED_QUERY", "duplicate field selected: Id"),
        ("SELECT Id FROM Contact GROUP BY Email", "MALFORMED_QUERY", "unexpected token: 'GROUP'"),
        ("", "MALFORMED_QUERY", "A query string has to be specified"),
        ("SELECT Foo FROM Contact", "INVALID_FIELD", "No such column 'Foo' on entity 'Contact'"),
        ("SELECT Account.Foo FROM Contact", "INVALID_FIELD", "No such column 'Foo' on entity 'Account'"),
        ("SELECT Owner.Name FROM Contact", "INVALID_FIELD", "Didn't understand relationship 'Owner'"),
        ("SELECT Id FROM Lead__x", "INVALID_TYPE", "sObject type 'Lead__x' is not supported"),
        (
            "SELECT Id FROM Contact WHERE SystemModstamp > '2024-01-01T00:00:00Z'",
            "INVALID_FIELD",
            "must be of type dateTime and should not be enclosed in quotes",
        ),
        ("SELECT Id FROM Contact WHERE Email = 5", "INVALID_FIELD", "must be of type string"),
        ("SELECT Id FROM Contact WHERE IsDeleted = 'true'", "INVALID_FIELD", "must be of type boolean"),
        ("SELECT Id FROM Contact WHERE Id = 'abc'", "INVALID_QUERY_FILTER_OPERATOR", "invalid ID field: abc"),
        ("SELECT Id FROM Contact OFFSET 2001", "NUMBER_OUTSIDE_VALID_RANGE", "Maximum SOQL offset allowed is 2000"),
    ],
)
def test_errors_carry_the_crm_codes(text, code, detail):
    error = error_of(text)
    assert error.code == code
    assert detail in error.message


def test_error_message_points_at_the_offending_token():
    error = error_of("SELECT Id, Nope FROM Contact")
    assert error.message.startswith("\nSELECT Id, Nope FROM Contact\n           ^\nERROR at Row:1:Column:12\n")
