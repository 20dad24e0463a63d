"""Liveness and readiness probes: no token, JSON, 503 naming what is down."""

import pytest
from django.db import OperationalError

from syncroot import health

pytestmark = pytest.mark.django_db

CLOSED_PORT = "redis://127.0.0.1:1/0"


def database_down() -> str:
    raise OperationalError("could not connect to server: Connection refused")


def test_healthz_is_ok_without_touching_dependencies(client, monkeypatch):
    monkeypatch.setattr(health, "_check_database", database_down)

    response = client.get("/healthz")

    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_readyz_is_ready_when_database_and_redis_answer(client):
    response = client.get("/readyz")

    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"database": "ok", "redis": "ok"}}


def test_readyz_is_503_naming_redis_when_the_broker_is_unreachable_and_recovers(client, settings):
    real_broker = settings.CELERY_BROKER_URL
    settings.CELERY_BROKER_URL = CLOSED_PORT

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == "not_ready"
    assert "redis" in body["message"]
    assert "database" not in body["message"]
    assert body["details"]["database"] == "ok"
    assert body["details"]["redis"].startswith("error: ConnectionError")

    settings.CELERY_BROKER_URL = real_broker
    assert client.get("/readyz").status_code == 200


def test_readyz_is_503_naming_the_database_when_it_fails_and_recovers(client, monkeypatch):
    monkeypatch.setattr(health, "_check_database", database_down)

    response = client.get("/readyz")

    assert response.status_code == 503
    body = response.json()
    assert body["code"] == "not_ready"
    assert "database" in body["message"]
    assert body["details"]["database"].startswith("error: OperationalError")
    assert body["details"]["redis"] == "ok"

    monkeypatch.undo()
    assert client.get("/readyz").status_code == 200


def test_readyz_names_both_when_both_are_down(client, monkeypatch, settings):
    monkeypatch.setattr(health, "_check_database", database_down)
    settings.CELERY_BROKER_URL = CLOSED_PORT

    body = client.get("/readyz").json()

    assert body["message"] == "Not ready: database, redis unavailable."


def test_the_database_check_really_queries(django_assert_num_queries):
    with django_assert_num_queries(1):
        assert health._check_database() == "ok"


@pytest.mark.parametrize("path", ["/healthz", "/readyz"])
def test_probes_need_no_token(client, path):
    response = client.get(path)

    assert response.status_code == 200
    assert "WWW-Authenticate" not in response
