"""Liveness and readiness probes."""

import redis
from django.conf import settings
from django.db import connection
from django.http import HttpRequest, JsonResponse

from syncroot.errors import error_body


def healthz(request: HttpRequest) -> JsonResponse:
    return JsonResponse({"status": "ok"})


def _check_database() -> str:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return "ok"


def _check_redis() -> str:
    client = redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    finally:
        client.close()
    return "ok"


def readyz(request: HttpRequest) -> JsonResponse:
    checks: dict[str, str] = {}
    for name, check in (("database", _check_database), ("redis", _check_redis)):
        try:
            checks[name] = check()
        except Exception as exc:  # any failure means not ready; the reason goes to the caller
            checks[name] = f"error: {exc.__class__.__name__}: {exc}"[:300]
    failed = sorted(name for name, result in checks.items() if result != "ok")
    if failed:
        return JsonResponse(error_body("not_ready", f"Not ready: {', '.join(failed)} unavailable.", checks), status=503)
    return JsonResponse({"status": "ready", "checks": checks})
