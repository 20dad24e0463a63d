"""What every webhook endpoint answers besides a stored delivery: JSON errors with the right status,
size limits that hold for chunked bodies too, and 503 (so the CRM redelivers) when storage fails."""

import io
import logging

import pytest
from django.db import connection

import webhooks.services
from crm import registry
from syncroot.celery import app as celery_app
from webhooks.models import WebhookEvent
from webhooks.tests.factories import HUBSPOT_SECRET, PUBLIC_BASE_URL, hubspot_body, hubspot_events, hubspot_headers

pytestmark = pytest.mark.django_db

PATH = "/webhooks/hubspot"
URL = PUBLIC_BASE_URL + PATH
TWENTY_MB = 20 * 1024 * 1024


@pytest.fixture(autouse=True)
def hubspot(settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "access_token": "t", "client_secret": HUBSPOT_SECRET, "app_id": "1234567"}
    settings.PUBLIC_BASE_URL = PUBLIC_BASE_URL
    registry.reset()


def assert_json_error(response, status: int, code: str) -> None:
    assert response.status_code == status, response.content
    assert response["Content-Type"] == "application/json"
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code


def chunked(body_stream: io.BytesIO) -> dict:
    """WSGI environ of a `Transfer-Encoding: chunked` request as gunicorn presents it: no
    Content-Length, and an input stream the server ends at the last chunk."""
    return {
        "CONTENT_LENGTH": "",
        "HTTP_TRANSFER_ENCODING": "chunked",
        "wsgi.input": body_stream,
        "wsgi.input_terminated": True,
    }


# --- Routing and methods -------------------------------------------------------------------------
def test_an_unknown_provider_is_404_json(client):
    response = client.post("/webhooks/pipedrive", data=b"[]", content_type="application/json")

    assert_json_error(response, 404, "not_found")
    assert response.json()["details"] == {"provider": "pipedrive"}


def test_a_provider_that_is_not_connected_is_404_json(client, settings):
    settings.SALESFORCE = {**settings.SALESFORCE, "access_token": "", "client_id": "", "client_secret": ""}
    registry.reset()

    response = client.post("/webhooks/salesforce?token=x", data=b"<a/>", content_type="text/xml")

    assert_json_error(response, 404, "not_found")


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_405_json(client, method):
    response = getattr(client, method)(PATH)

    assert_json_error(response, 405, "method_not_allowed")
    assert response["Allow"] == "POST"


def test_no_csrf_token_is_needed(enqueued, settings):
    from django.test import Client

    strict = Client(enforce_csrf_checks=True)
    body = hubspot_body(hubspot_events(1))

    response = strict.post(PATH, data=body, content_type="application/json", headers=hubspot_headers(body, url=URL))

    assert response.status_code == 200


# --- Size limits ---------------------------------------------------------------------------------
def test_a_20_mb_body_with_content_length_is_413(client, enqueued):
    response = client.post(PATH, data=b"[" + b" " * TWENTY_MB + b"]", content_type="application/json")

    assert_json_error(response, 413, "payload_too_large")
    assert WebhookEvent.objects.count() == 0


def test_a_20_mb_chunked_body_is_413_without_reading_it_all(client, enqueued, settings):
    stream = io.BytesIO(b"[" + b" " * TWENTY_MB + b"]")

    response = client.post(PATH, content_type="application/json", **chunked(stream))

    assert_json_error(response, 413, "payload_too_large")
    assert response.json()["details"] == {"max_bytes": settings.WEBHOOK_MAX_BODY_BYTES}
    assert stream.tell() <= settings.WEBHOOK_MAX_BODY_BYTES + 1
    assert WebhookEvent.objects.count() == 0


def test_the_webhook_limit_applies_below_the_api_limit(client, enqueued, settings):
    settings.WEBHOOK_MAX_BODY_BYTES = 2_000
    body = hubspot_body(hubspot_events(30))
    assert len(body) > 2_000

    response = client.post(PATH, data=body, content_type="application/json", headers=hubspot_headers(body, url=URL))

    assert_json_error(response, 413, "payload_too_large")
    assert WebhookEvent.objects.count() == 0


def test_a_chunked_delivery_within_the_limit_is_read_whole_and_stored(client, enqueued):
    body = hubspot_body(hubspot_events(100))

    response = client.post(
        PATH, content_type="application/json", headers=hubspot_headers(body, url=URL), **chunked(io.BytesIO(body))
    )

    assert response.status_code == 200, response.content
    assert WebhookEvent.objects.count() == 100


# --- Storage down --------------------------------------------------------------------------------
@pytest.fixture
def database_down(transactional_db):
    """The database refuses connections (nothing listens on port 1) for the request."""
    original = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = "1"
    yield
    connection.close()
    connection.settings_dict["PORT"] = original


def test_database_down_is_503_so_the_crm_redelivers(client, enqueued, database_down):
    body = hubspot_body(hubspot_events(3))

    response = client.post(PATH, data=body, content_type="application/json", headers=hubspot_headers(body, url=URL))

    assert_json_error(response, 503, "service_unavailable")
    assert response.json()["details"] == {"service": "database"}
    assert response["Retry-After"] == "5"
    assert enqueued == []


@pytest.fixture
def broker_down(monkeypatch):
    monkeypatch.setattr(celery_app.conf, "broker_url", "redis://127.0.0.1:1/0")
    # Forget pooled connections to the real broker so the next publish connects to the closed port.
    monkeypatch.setattr(celery_app, "_pool", None)
    monkeypatch.setattr(celery_app.amqp, "_producer_pool", None)


def test_broker_down_still_acks_what_postgresql_stored(client, broker_down, caplog, django_capture_on_commit_callbacks):
    body = hubspot_body(hubspot_events(3))

    with caplog.at_level(logging.WARNING), django_capture_on_commit_callbacks(execute=True):
        response = client.post(PATH, data=body, content_type="application/json", headers=hubspot_headers(body, url=URL))

    # Stored is what the CRM must know: the sweeper enqueues `received` events once Redis is back.
    assert response.status_code == 200
    assert WebhookEvent.objects.filter(status="received").count() == 3
    assert any("inbox enqueue failed" in record.getMessage() for record in caplog.records)


def test_an_error_after_commit_still_acks_what_was_stored(client, monkeypatch, transactional_db, caplog):
    from redis.exceptions import ConnectionError as RedisConnectionError

    def refuse(*, provider, event_ids):
        raise RedisConnectionError("Connection refused")

    monkeypatch.setattr(webhooks.services, "inbox_enqueue", refuse)
    body = hubspot_body(hubspot_events(2))
    headers = hubspot_headers(body, url=URL)

    response = client.post(PATH, data=body, content_type="application/json", headers=headers)

    # Stored before the enqueue failed: the CRM may stop redelivering, the sweeper enqueues them.
    assert response.status_code == 200
    assert WebhookEvent.objects.filter(status="received").count() == 2
    assert any("on_commit" in record.getMessage() for record in caplog.records)  # logged, not lost

    monkeypatch.setattr(webhooks.services, "inbox_enqueue", lambda *, provider, event_ids: None)
    again = client.post(PATH, data=body, content_type="application/json", headers=headers)
    assert again.status_code == 200
    assert WebhookEvent.objects.count() == 2
