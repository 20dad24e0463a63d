"""The live OpenAPI schema, fuzzed: generated requests (valid and invalid) against the WSGI app.

Every answer must be no 5xx, a status the schema documents for that operation, the documented
content type, and a body matching the documented schema. A stateful run follows the links
schemathesis infers (POST /contacts -> its id -> GET/PUT/PATCH/DELETE/sync) so the checks also
see real contacts, not only 404s. In-process: requests share the test's database transaction.
"""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, transaction
from hypothesis import HealthCheck, Phase
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from syncroot.wsgi import application

pytestmark = pytest.mark.django_db


def no_server_fault(ctx, response, case) -> None:
    """No 5xx, but for the documented `crm_unavailable`: connecting an account asks the CRM, and
    none is reachable from here (see `no_network`), which the API must say as such."""
    if response.status_code in (502, 503) and response.json().get("code") == "crm_unavailable":
        return
    not_a_server_error(ctx, response, case)


CHECKS = [no_server_fault, status_code_conformance, content_type_conformance, response_schema_conformance]
FUZZ = hypothesis_settings(
    max_examples=30,
    deadline=None,
    derandomize=True,  # the same requests every run: a failure here is a regression, not luck
    database=None,
    suppress_health_check=list(HealthCheck),
    phases=[Phase.explicit, Phase.generate],  # no shrinking: the failing request is printed as is
)

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# Workflows use valid requests only, so they get past validation into the update and delete paths
# (the per-operation test above sends invalid ones too).
workflows = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)
# (NUL characters are valid JSON strings but PostgreSQL text cannot hold them; the API says 400.)
workflows.config.generation.update(modes=[GenerationMode.POSITIVE], allow_x00=False)


def every_status_documented(ctx, response, case) -> None:
    """status_code_conformance skips schemathesis' wrong-method and wrong-content-type probes;
    their 405 and 415 are part of the contract too."""
    if case.method.upper() == "OPTIONS":  # HTTP's own discovery (DRF describes the view), not the API
        return
    documented = case.operation.responses.status_codes
    assert str(response.status_code) in documented, f"{response.status_code} not in {documented}"


def error_shape(ctx, response, case) -> None:
    """Every error answer is the API's one JSON error shape."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"code", "message", "details"}, body


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Generated connection requests name any host: none is called (the CRM is unreachable)."""
    import requests

    def refuse(self, request, **kwargs):
        raise requests.ConnectionError(f"no network in this test: {request.url}")

    monkeypatch.setattr(requests.adapters.HTTPAdapter, "send", refuse)


@pytest.fixture
def bearer(api_token):
    # Straight to the WSGI app, not Django's test client: keep the test's connection (and its
    # transaction) across requests, as the test client does.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"Authorization": f"Bearer {api_token.raw}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


def test_every_operation_documents_every_error_status_with_the_error_body():
    operations = [
        (method, path, operation)
        for path, item in schema.raw_schema["paths"].items()
        for method, operation in item.items()
        if method in ("get", "put", "patch", "post", "delete")
    ]
    assert len(operations) == 32
    for method, path, operation in operations:
        for status in ("400", "401", "404", "405", "406", "409", "412", "413", "415", "422", "429", "503"):
            response = operation["responses"].get(status)
            assert response, f"{method.upper()} {path} does not document {status}"
            assert response["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_request_bodies_refuse_unknown_properties_as_the_api_does():
    components = schema.raw_schema["components"]["schemas"]
    assert components["ContactInputRequest"]["additionalProperties"] is False
    assert components["PatchedContactInputRequest"]["additionalProperties"] is False
    assert components["ContactBatchInputRequest"]["additionalProperties"] is False
    assert components["FieldCreateRequest"]["additionalProperties"] is False
    assert components["PatchedFieldUpdateRequest"]["additionalProperties"] is False
    assert components["PatchedMappingUpdateRequest"]["additionalProperties"] is False


def test_the_schema_describes_custom_values_and_the_fields_endpoints():
    components = schema.raw_schema["components"]["schemas"]
    assert components["Contact"]["properties"]["custom"]["type"] == "object"
    assert components["ContactInputRequest"]["properties"]["custom"]["additionalProperties"]["nullable"] is True
    assert {"/fields", "/fields/{key}"} <= set(schema.raw_schema["paths"])
    assert set(components["Field"]["properties"]) >= {"key", "label", "type", "options", "max_length", "builtin"}


@schema.parametrize()
@FUZZ
def test_every_operation_with_generated_requests(case, bearer):
    case.call_and_validate(headers=bearer, checks=[*CHECKS, every_status_documented, error_shape])


def test_stateful_workflows_over_inferred_links(bearer):
    class Workflow(workflows.as_state_machine()):
        # Each workflow starts from the same database: the steps hypothesis draws depend on the
        # answers (a 409 for an email an earlier workflow created changes what can follow).
        def setup(self):
            self.savepoint = transaction.savepoint()

        def teardown(self):
            transaction.savepoint_rollback(self.savepoint)

        def get_call_kwargs(self, case):
            return {"headers": bearer}

        def validate_response(self, response, case, **kwargs):
            case.validate_response(response, checks=[*CHECKS, every_status_documented, error_shape])

    Workflow.run(
        settings=hypothesis_settings(
            FUZZ,
            max_examples=40,
            stateful_step_count=8,
            phases=[Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
    )
