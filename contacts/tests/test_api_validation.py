"""Bad input never reaches the database and always answers with the JSON error shape."""

import json

import pytest

from contacts.models import MAX_LENGTHS, SYNCED_FIELDS, Contact
from contacts.tests.factories import ContactFactory
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


def email_of_length(length: int) -> str:
    domain = "@example.com"
    return "a" * (length - len(domain)) + domain if length <= 64 + len(domain) else _long_domain_email(length)


def _long_domain_email(length: int) -> str:
    local = "a" * 60 + "@"
    labels = "b" * (length - len(local) - len(".com")) + ".com"
    return local + labels


def test_an_unknown_field_is_named_in_the_error(api_client):
    response = api_client.post("/contacts", {"email": "x@example.com", "nickname": "X"}, format="json")

    body = assert_error(response, 400, "validation_error")
    assert body["details"] == {"nickname": ["Unknown field."]}
    assert not Contact.objects.exists()


def test_an_unknown_field_in_a_patch_is_rejected(api_client):
    contact = ContactFactory()

    response = api_client.patch(f"/contacts/{contact.pk}", {"version": 99}, format="json")

    assert assert_error(response, 400, "validation_error")["details"] == {"version": ["Unknown field."]}
    contact.refresh_from_db()
    assert contact.version == 1


@pytest.mark.parametrize("email", ["not-an-email", "a@", "@example.com", "two@@example.com", ""])
def test_a_bad_email_is_a_400(api_client, email):
    body = assert_error(api_client.post("/contacts", {"email": email}, format="json"), 400, "validation_error")

    assert "email" in body["details"]
    assert not Contact.objects.exists()


def test_a_missing_email_is_a_400(api_client):
    body = assert_error(api_client.post("/contacts", {"first_name": "Ada"}, format="json"), 400, "validation_error")

    assert "email" in body["details"]


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}])
def test_a_value_that_is_not_text_is_a_400(api_client, value):
    response = api_client.post("/contacts", {"email": "x@example.com", "first_name": value}, format="json")

    assert "first_name" in assert_error(response, 400, "validation_error")["details"]


NOT_STRINGS = [123, 1.5, 0, -7]


@pytest.mark.parametrize("value", NOT_STRINGS)
@pytest.mark.parametrize("field", SYNCED_FIELDS)
def test_a_number_for_a_text_field_is_a_400_naming_it(api_client, field, value):
    payload = {"email": "x@example.com", field: value}

    body = assert_error(api_client.post("/contacts", payload, format="json"), 400, "validation_error")

    assert body["details"] == {field: ["Not a valid string."]}
    assert not Contact.objects.exists()


@pytest.mark.parametrize("method", ["put", "patch"])
@pytest.mark.parametrize("field", SYNCED_FIELDS)
def test_a_number_in_an_update_is_a_400_and_changes_nothing(api_client, method, field):
    contact = ContactFactory()
    payload = {"email": contact.email, field: 123}

    response = getattr(api_client, method)(f"/contacts/{contact.pk}", payload, format="json")

    assert assert_error(response, 400, "validation_error")["details"] == {field: ["Not a valid string."]}
    contact.refresh_from_db()
    assert contact.version == 1


@pytest.mark.parametrize("field", SYNCED_FIELDS)
def test_a_number_in_a_batch_item_is_a_400_naming_the_item_and_field(api_client, field):
    items = [{"email": "a@example.com"}, {"email": "b@example.com", field: 42}]

    body = assert_error(api_client.post("/contacts/batch", {"contacts": items}, format="json"), 400, "validation_error")

    assert body["details"] == {"contacts": {"1": {field: ["Not a valid string."]}}}
    assert not Contact.objects.exists()


@pytest.mark.parametrize("field", [f for f in SYNCED_FIELDS if f != "email"])
def test_a_field_over_its_max_length_is_a_400(api_client, field):
    payload = {"email": "long@example.com", field: "x" * (MAX_LENGTHS[field] + 1)}

    body = assert_error(api_client.post("/contacts", payload, format="json"), 400, "validation_error")

    assert field in body["details"]
    assert not Contact.objects.exists()


def test_an_email_over_its_max_length_is_a_400(api_client):
    email = email_of_length(MAX_LENGTHS["email"] + 1)
    assert len(email) == 81

    body = assert_error(api_client.post("/contacts", {"email": email}, format="json"), 400, "validation_error")

    assert "email" in body["details"]


def test_an_over_long_patch_is_a_400(api_client):
    contact = ContactFactory()

    response = api_client.patch(f"/contacts/{contact.pk}", {"first_name": "x" * 41}, format="json")

    assert "first_name" in assert_error(response, 400, "validation_error")["details"]


def test_values_at_their_max_length_are_accepted_and_stored_exactly(api_client):
    payload = {field: "x" * length for field, length in MAX_LENGTHS.items()}
    payload["email"] = email_of_length(MAX_LENGTHS["email"])
    assert len(payload["email"]) == 80

    response = api_client.post("/contacts", payload, format="json")

    assert response.status_code == 201, response.content
    assert Contact.objects.get(pk=response.json()["id"]).synced_values() == payload


def test_unicode_round_trips(api_client):
    payload = {
        "email": "zoe@example.com",
        "first_name": "Zoë 🎉",
        "last_name": "Ñúñez-Łukasiewicz",
        "company": "株式会社テスト",
        "job_title": "Директор",
    }

    created = api_client.post("/contacts", payload, format="json")
    read = api_client.get(created["Location"]).json()

    assert created.status_code == 201
    assert {field: read[field] for field in payload} == payload


def test_unicode_counts_characters_not_bytes_against_the_limit(api_client):
    response = api_client.post("/contacts", {"email": "u@example.com", "first_name": "é" * 40}, format="json")

    assert response.status_code == 201


@pytest.mark.parametrize("body", ["[]", '[{"email": "x@example.com"}]', '"x@example.com"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_a_400(api_client, body):
    response = api_client.post("/contacts", body, content_type="application/json")

    assert_error(response, 400, "validation_error")
    assert not Contact.objects.exists()


@pytest.mark.parametrize("body", ['{"email": ', "{'email': 'x@example.com'}", "not json", '{"email": "x"} trailing'])
def test_malformed_json_is_a_400(api_client, body):
    assert_error(api_client.post("/contacts", body, content_type="application/json"), 400, "malformed_json")


@pytest.mark.parametrize(
    "body",
    ["[" * 100_000 + "]" * 100_000, '{"email": "x@example.com", "first_name": ' + "[" * 50_000 + "]" * 50_000 + "}"],
)
def test_json_nested_too_deeply_is_a_400_not_a_500(api_client, body):
    assert len(body) < 1_048_576  # under the body limit: the parser itself must cope

    assert_error(api_client.post("/contacts", body, content_type="application/json"), 400, "malformed_json")


def test_malformed_json_in_an_update_is_a_400(api_client):
    contact = ContactFactory()

    response = api_client.patch(f"/contacts/{contact.pk}", "{", content_type="application/json")

    assert_error(response, 400, "malformed_json")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/x-www-form-urlencoded", "email=x%40example.com"),
        ("text/plain", '{"email": "x@example.com"}'),
        ("application/xml", "<contact><email>x@example.com</email></contact>"),
    ],
)
def test_a_body_that_is_not_json_is_a_415(api_client, content_type, body):
    assert_error(api_client.post("/contacts", body, content_type=content_type), 415, "unsupported_media_type")
    assert not Contact.objects.exists()


def test_a_body_over_the_limit_is_a_413(api_client, settings):
    settings.API_MAX_BODY_BYTES = 200
    payload = json.dumps({"email": "big@example.com", "company": "x" * 250})

    body = assert_error(
        api_client.post("/contacts", payload, content_type="application/json"), 413, "payload_too_large"
    )

    assert body["details"] == {"max_bytes": 200}
    assert not Contact.objects.exists()


def test_a_body_over_the_default_limit_is_a_413(api_client):
    payload = json.dumps({"email": "big@example.com", "company": "x" * 1_100_000})

    assert_error(api_client.post("/contacts", payload, content_type="application/json"), 413, "payload_too_large")


def test_a_body_just_under_the_limit_is_read(api_client, settings):
    payload = json.dumps({"email": "fits@example.com"})
    settings.API_MAX_BODY_BYTES = len(payload)

    assert api_client.post("/contacts", payload, content_type="application/json").status_code == 201


def test_an_invalid_content_length_is_a_400(api_client):
    response = api_client.generic(
        "POST", "/contacts", b'{"email": "x@example.com"}', content_type="application/json", CONTENT_LENGTH="lots"
    )

    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "email", ["taken@example.com", "TAKEN@example.com", "Taken@Example.COM", " taken@example.com "]
)
def test_a_duplicate_email_in_any_case_is_a_409(api_client, email):
    existing = ContactFactory(email="taken@example.com")

    body = assert_error(api_client.post("/contacts", {"email": email}, format="json"), 409, "conflict")

    assert body["details"]["existing_id"] == str(existing.pk)
    assert Contact.objects.count() == 1


@pytest.mark.parametrize("method", ["put", "patch"])
def test_changing_the_email_to_another_contacts_email_is_a_409(api_client, method):
    other = ContactFactory(email="other@example.com")
    contact = ContactFactory(email="mine@example.com")

    response = getattr(api_client, method)(f"/contacts/{contact.pk}", {"email": "OTHER@example.com"}, format="json")

    assert assert_error(response, 409, "conflict")["details"]["existing_id"] == str(other.pk)
    contact.refresh_from_db()
    assert (contact.email, contact.version) == ("mine@example.com", 1)


def test_a_validation_error_does_not_change_the_contact(api_client):
    contact = ContactFactory()

    response = api_client.put(f"/contacts/{contact.pk}", {"email": "bad", "first_name": "Changed"}, format="json")

    assert_error(response, 400, "validation_error")
    contact.refresh_from_db()
    assert contact.first_name != "Changed"
    assert contact.version == 1


@pytest.mark.parametrize("path", ["/nope", "/contacts/x/y", "/api/", "/contact"])
def test_an_unknown_url_is_a_json_404(api_client, path):
    response = api_client.get(path)

    assert_error(response, 404, "not_found")
    assert b"<html" not in response.content.lower()


@pytest.mark.parametrize(
    ("method", "path"),
    [("delete", "/contacts"), ("put", "/contacts"), ("patch", "/contacts"), ("post", "/contacts/{id}")],
)
def test_a_wrong_method_is_a_json_405(api_client, method, path):
    contact = ContactFactory()

    response = getattr(api_client, method)(path.format(id=contact.pk), {}, format="json")

    body = assert_error(response, 405, "method_not_allowed")
    assert method.upper() in body["message"]
    assert method.upper() not in response["Allow"]
    assert Contact.objects.filter(deleted_at__isnull=True).count() == 1


@pytest.mark.parametrize("method", ["TRACE", "CONNECT", "PROPFIND"])
def test_an_unknown_method_is_a_json_405(api_client, method):
    response = api_client.generic(method, "/contacts")

    assert_error(response, 405, "method_not_allowed")
    assert set(response["Allow"].replace(" ", "").split(",")) >= {"GET", "POST"}
