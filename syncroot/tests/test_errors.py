"""One JSON error shape everywhere: DRF exceptions, infrastructure failures, Django's 400/403/404/500."""

import pytest
import redis
from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import OperationalError
from django.http import Http404
from django.test import RequestFactory
from django.urls import path
from kombu.exceptions import OperationalError as KombuOperationalError
from rest_framework.views import APIView

from syncroot import errors
from syncroot import urls as project_urls
from syncroot.testing import assert_error

pytestmark = pytest.mark.django_db


# --- A URL configuration: the project's own, plus views that fail on purpose ---------------------
def failing_api_view(exc: Exception):
    class Failing(APIView):
        authentication_classes: list = []
        permission_classes: list = []

        def get(self, request):
            raise exc

    return Failing.as_view()


def failing_django_view(request):
    raise RuntimeError("boom")


FAILURES = {
    "unexpected": RuntimeError("boom"),
    "database-down": OperationalError("could not connect to server: Connection refused"),
    "database-connection-lost": OperationalError("server closed the connection unexpectedly"),
    "redis-down": redis.exceptions.ConnectionError("Error 111 connecting to 127.0.0.1:6379."),
    "broker-down": KombuOperationalError("Error 111 connecting to 127.0.0.1:6379."),
    "http404": Http404("nothing here"),
    "forbidden": PermissionDenied(),
    "too-big": RequestDataTooBig(),
    "conflict": errors.Conflict("Taken.", details={"field": "email"}, headers={"X-Reason": "dup"}),
    "unavailable": errors.ServiceUnavailable("Later."),
}

urlpatterns = [
    *[path(f"fail/{name}", failing_api_view(exc)) for name, exc in FAILURES.items()],
    path("fail-plain", failing_django_view),
    *project_urls.urlpatterns,
]
handler400 = project_urls.handler400
handler403 = project_urls.handler403
handler404 = project_urls.handler404
handler500 = project_urls.handler500


@pytest.fixture
def app_client(client):
    client.raise_request_exception = False  # answer like production: through handler500
    return client


# --- The project's handlers are the JSON ones ---------------------------------------------------------
def test_the_project_urlconf_names_the_json_handlers():
    assert project_urls.handler400 == "syncroot.errors.handler400"
    assert project_urls.handler403 == "syncroot.errors.handler403"
    assert project_urls.handler404 == "syncroot.errors.handler404"
    assert project_urls.handler500 == "syncroot.errors.handler500"


@pytest.mark.parametrize(
    ("handler", "status", "code"),
    [
        (errors.handler400, 400, "bad_request"),
        (errors.handler403, 403, "permission_denied"),
        (errors.handler404, 404, "not_found"),
    ],
)
def test_handlers_answer_json(handler, status, code):
    request = RequestFactory().get("/anything")

    assert_error(handler(request, Exception("x")), status, code)


def test_handler500_answers_json_without_leaking_the_exception():
    response = errors.handler500(RequestFactory().get("/anything"))

    body = assert_error(response, 500, "internal_error")
    assert body["details"] == {}


# --- Through the full stack -----------------------------------------------------------------------------
@pytest.mark.urls(__name__)
@pytest.mark.parametrize("url", ["/fail/unexpected", "/fail-plain"])
def test_an_unexpected_exception_is_a_json_500(app_client, url):
    response = app_client.get(url)

    body = assert_error(response, 500, "internal_error")
    assert "boom" not in response.content.decode()
    assert body["details"] == {}


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("name", ["database-down", "database-connection-lost"])
def test_a_database_outage_is_a_503(app_client, name):
    response = app_client.get(f"/fail/{name}")

    assert assert_error(response, 503, "service_unavailable")["details"] == {"service": "database"}
    assert response["Retry-After"] == "5"


@pytest.mark.urls(__name__)
@pytest.mark.parametrize("name", ["redis-down", "broker-down"])
def test_a_redis_outage_is_a_503(app_client, name):
    response = app_client.get(f"/fail/{name}")

    assert assert_error(response, 503, "service_unavailable")["details"] == {"service": "redis"}
    assert response["Retry-After"] == "5"


@pytest.mark.urls(__name__)
@pytest.mark.parametrize(
    ("name", "status", "code"),
    [
        ("http404", 404, "not_found"),
        ("forbidden", 403, "permission_denied"),
        ("too-big", 413, "payload_too_large"),
        ("unavailable", 503, "service_unavailable"),
    ],
)
def test_django_and_application_exceptions_in_api_views_are_json(app_client, name, status, code):
    assert_error(app_client.get(f"/fail/{name}"), status, code)


@pytest.mark.urls(__name__)
def test_an_application_error_carries_its_details_and_headers(app_client):
    response = app_client.get("/fail/conflict")

    body = assert_error(response, 409, "conflict")
    assert body == {"code": "conflict", "message": "Taken.", "details": {"field": "email"}}
    assert response["X-Reason"] == "dup"


def test_a_disallowed_host_is_a_json_400(client):
    response = client.get("/healthz", HTTP_HOST="attacker.example")

    assert_error(response, 400, "bad_request")


def test_an_unknown_url_without_a_token_is_a_json_404(client):
    response = client.get("/wp-login.php")

    assert_error(response, 404, "not_found")


# --- Body size limit ----------------------------------------------------------------------------------
def test_an_oversized_body_is_refused_before_routing(client, settings):
    settings.API_MAX_BODY_BYTES = 10

    response = client.post("/no-such-endpoint", "x" * 11, content_type="application/json")

    assert assert_error(response, 413, "payload_too_large")["details"] == {"max_bytes": 10}


def test_the_admin_is_exempt_from_the_api_body_limit(client, settings):
    settings.API_MAX_BODY_BYTES = 10
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # the login attempt stays fast

    response = client.post("/admin/login/", {"username": "nobody", "password": "wrong-password"})

    assert response.status_code == 200  # the login form again, not a 413
