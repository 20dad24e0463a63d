"""Property-based requests generated from the OpenAPI schema: never a 500, always the documented shapes."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import content_type_conformance, response_schema_conformance

from syncroot.wsgi import application

schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", application)


def error_shape(ctx, response, case) -> None:
    """Every error answer is the API's one JSON error shape."""
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"code", "message", "details"}, body


@pytest.fixture
def auth_headers(api_token):
    # Requests go straight to the WSGI app, not Django's test client: keep the test's database
    # connection (and its transaction) open across them like the test client does.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield {"Authorization": f"Bearer {api_token.raw}"}
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.mark.django_db
@schema.parametrize()
@hypothesis_settings(
    max_examples=10, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None
)
def test_generated_requests_never_fail_the_server(case, auth_headers):
    case.call_and_validate(
        headers=auth_headers,
        checks=[not_a_server_error, content_type_conformance, response_schema_conformance, error_shape],
    )
