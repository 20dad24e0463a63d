"""`POST /webhooks/<provider>`: verify a CRM's delivery, store it in the inbox, acknowledge it.

The view only moves bytes: the provider's `webhook.py` checks authenticity and splits the
delivery into events, `webhooks.services.inbox_store` writes them in one transaction and enqueues
them after commit. A 2xx tells the CRM "stored, do not send again", so it is sent only once the
events are in PostgreSQL; any other status makes the CRM redeliver later, which is safe because
the inbox is unique per (provider, event id).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from django.conf import settings
from django.db import DataError, InterfaceError, OperationalError
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import csrf_exempt

from crm.base import Provider, WebhookEvent, WebhookRejected
from crm.registry import get_provider
from syncroot.chunked import read_limited
from syncroot.errors import error_body
from webhooks.services import inbox_route, inbox_store

logger = logging.getLogger(__name__)

_RETRY_AFTER_SECONDS = "5"


def _error(status: int, code: str, message: str, details: dict | None = None) -> JsonResponse:
    return JsonResponse(error_body(code, message, details), status=status)


@csrf_exempt  # CRMs authenticate with signatures and shared secrets, never with a session cookie
def webhook_receive(request: HttpRequest, provider: str) -> HttpResponse:
    if request.method != "POST":
        response = _error(405, "method_not_allowed", f"Method {request.method} is not allowed here; CRMs POST.")
        response["Allow"] = "POST"
        return response
    try:
        crm = get_provider(provider)
    except LookupError:
        return _error(404, "not_found", "No connected provider by that name.", {"provider": provider})

    limit = settings.WEBHOOK_MAX_BODY_BYTES
    try:
        body = _read_body(request, limit=limit)
    except OSError:  # the client went away mid-body
        return _error(400, "bad_request", "The request body could not be read.")
    if body is None:
        return _error(413, "payload_too_large", "The request body is too large.", {"max_bytes": limit})

    try:
        events = crm.parse_webhook(
            body=body, headers=request.headers, url=called_url(request), query=request.GET.dict()
        )
    except WebhookRejected as exc:
        # Logged without the body: deliveries carry personal data.
        logger.warning(
            "webhook rejected",
            extra={"provider": provider, "status": exc.status, "code": exc.code, "reason": exc.message},
        )
        return _error(exc.status, exc.code, exc.message)

    try:
        new_ids = [
            pk
            for key, routed in inbox_route(crm=crm, events=events).items()
            for pk in inbox_store(provider=key, events=routed)
        ]
    except (OperationalError, InterfaceError) as exc:
        logger.warning("webhook not stored: database unavailable", extra={"provider": provider, "error": str(exc)})
        return _unavailable("database")
    except DataError as exc:
        # Verified, but PostgreSQL cannot hold it (a NUL character in a JSON string): a 4xx, logged
        # for the operator; the CRM's redeliveries will fail the same way.
        logger.error("webhook not stored: unstorable payload", extra={"provider": provider, "error": str(exc)})
        return _error(400, "unstorable_payload", "The delivery holds data the inbox cannot store.")
    logger.info("webhook stored", extra={"provider": provider, "events": len(events), "new": len(new_ids)})

    content_type, ack = _ack(crm, events)
    return HttpResponse(ack, content_type=content_type, status=200)


def called_url(request: HttpRequest) -> str:
    """The URL exactly as the CRM called it (HubSpot signs it): behind a proxy that changes the
    scheme or host, PUBLIC_BASE_URL names the public origin and the path comes from the request."""
    base = settings.PUBLIC_BASE_URL.rstrip("/")
    return base + request.get_full_path() if base else request.build_absolute_uri()


def _read_body(request: HttpRequest, *, limit: int) -> bytes | None:
    """The raw body, or None when it holds more than `limit` bytes. Never reads more than limit + 1.

    Under the WSGI entry point a chunked body arrives with its length (syncroot.chunked); served
    without it, a body that declares none is read from the raw stream, which the WSGI server ends
    at the last chunk (gunicorn sets wsgi.input_terminated).
    """
    declared = request.META.get("CONTENT_LENGTH")
    if declared:
        if int(declared) > limit:  # BodySizeLimitMiddleware already refused a non-numeric length
            return None
        body = request.read(limit + 1)
    elif request.META.get("wsgi.input_terminated"):
        return read_limited(request.META["wsgi.input"], limit)
    else:
        body = b""
    return None if len(body) > limit else body


def _ack(crm: Provider, events: Sequence[WebhookEvent]) -> tuple[str, bytes]:
    """The provider's acknowledgement for this delivery, for the `kind` its parser wrote into the
    events' payloads (Salesforce: SOAP for Outbound Messages, JSON for change events)."""
    kind = next((e.payload.get("kind") for e in events if isinstance(e.payload, dict) and e.payload.get("kind")), None)
    return crm.webhook_ack(kind)


def _unavailable(service: str) -> JsonResponse:
    response = _error(
        503, "service_unavailable", f"The {service} is unavailable; deliver again shortly.", {"service": service}
    )
    response["Retry-After"] = _RETRY_AFTER_SECONDS
    return response
