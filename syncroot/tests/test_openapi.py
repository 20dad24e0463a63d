"""The OpenAPI schema and Swagger UI."""

import json

import pytest
import yaml
from django.core.management import call_command

pytestmark = pytest.mark.django_db

CONTACT_OPERATIONS = {
    "/contacts": {"get", "post"},
    "/contacts/{contact_id}": {"get", "put", "patch", "delete"},
    "/contacts/{contact_id}/sync": {"post"},
}
HTTP_METHODS = {"get", "put", "patch", "post", "delete", "head", "options", "trace"}


@pytest.fixture
def schema(client) -> dict:
    response = client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


def operations(schema: dict) -> dict[str, set[str]]:
    return {path: set(item) & HTTP_METHODS for path, item in schema["paths"].items()}


def test_the_schema_is_yaml_by_default_and_needs_no_token(client):
    response = client.get("/api/schema/")

    assert response.status_code == 200
    assert "openapi" in response["Content-Type"]
    document = yaml.safe_load(response.content)
    assert document["openapi"].startswith("3.")
    assert document["info"]["title"] == "SyncRoot API"


def test_the_json_schema_equals_the_yaml_one(client, schema):
    assert yaml.safe_load(client.get("/api/schema/").content) == schema


def test_the_schema_lists_every_contacts_endpoint_and_method(schema):
    found = operations(schema)

    for path, methods in CONTACT_OPERATIONS.items():
        assert found.get(path) == methods, path


def test_the_schema_leaves_out_the_admin_probes_and_itself(schema):
    assert not [p for p in schema["paths"] if p.startswith(("/admin", "/api/", "/healthz", "/readyz"))]


def test_contact_operations_require_the_bearer_token(schema):
    assert schema["components"]["securitySchemes"]["bearerAuth"] == {"type": "http", "scheme": "bearer"}
    for path in CONTACT_OPERATIONS:
        for method in CONTACT_OPERATIONS[path]:
            assert schema["paths"][path][method]["security"] == [{"bearerAuth": []}], (path, method)


def test_the_list_is_documented_as_the_paginated_envelope(schema):
    listed = schema["paths"]["/contacts"]["get"]
    ref = listed["responses"]["200"]["content"]["application/json"]["schema"]["$ref"]
    envelope = schema["components"]["schemas"][ref.rsplit("/", 1)[-1]]

    assert {"next", "previous", "results"} <= set(envelope["properties"])
    assert {p["name"] for p in listed["parameters"]} >= {"cursor", "page_size", "email", "updated_since"}


def test_writes_document_their_headers_and_error_bodies(schema):
    create = schema["paths"]["/contacts"]["post"]
    assert "Idempotency-Key" in {p["name"] for p in create["parameters"]}
    assert set(create["responses"]) >= {"201", "400", "401", "409", "422", "429"}
    error = create["responses"]["409"]["content"]["application/json"]["schema"]["$ref"]
    assert set(schema["components"]["schemas"][error.rsplit("/", 1)[-1]]["properties"]) == {
        "code",
        "message",
        "details",
    }
    for method in ("put", "patch", "delete"):
        operation = schema["paths"]["/contacts/{contact_id}"][method]
        assert "If-Match" in {p["name"] for p in operation["parameters"]}, method
        assert "412" in operation["responses"], method


def test_the_contact_schema_has_the_sync_map(schema):
    contact = schema["components"]["schemas"]["Contact"]

    assert {"id", "email", "version", "sync"} <= set(contact["properties"])
    assert contact["properties"]["sync"]["type"] == "object"


def test_the_schema_generates_without_warnings_and_validates(tmp_path):
    target = tmp_path / "schema.yaml"

    # --fail-on-warn raises on any warning; --validate checks it against the OpenAPI 3 JSON schema.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(target))

    assert "/contacts/{contact_id}" in yaml.safe_load(target.read_text())["paths"]


def test_swagger_ui_is_served(client):
    response = client.get("/api/docs/")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/html")
    assert b"swagger-ui" in response.content
    assert b"/api/schema/" in response.content


ONE_CONTACT_OPERATIONS = {
    "/contacts/{contact_id}": {"get", "put", "patch", "delete"},
    "/contacts/{contact_id}/sync": {"post"},
    "/contacts/{contact_id}/history": {"get"},
    "/contacts/{contact_id}/merge": {"post"},
    "/contacts/{contact_id}/restore": {"post"},
}


def test_every_operation_on_one_contact_documents_410_with_where_it_went(schema):
    for path, methods in ONE_CONTACT_OPERATIONS.items():
        for method in methods:
            responses = schema["paths"][path][method]["responses"]
            gone = responses["410"]["content"]["application/json"]
            name = gone["schema"]["$ref"].rsplit("/", 1)[-1]
            details = schema["components"]["schemas"][name]["properties"]["details"]["$ref"].rsplit("/", 1)[-1]
            assert set(schema["components"]["schemas"][details]["required"]) == {"id", "merged_into"}, (path, method)
            assert gone["examples"]["Merged"]["value"]["code"] == "gone", (path, method)
            assert "404" in responses, (path, method)
