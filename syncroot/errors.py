"""One error shape for the whole API: {"code", "message", "details"} with the right status.

Services raise `ApplicationError` subclasses; DRF's own exceptions, Django's 404/500 handlers and
infrastructure failures (database or broker down) are mapped here, so no HTML ever leaves the API.
"""

import logging
from typing import Any

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import DatabaseError, InterfaceError
from django.http import Http404, HttpRequest, JsonResponse
from rest_framework import exceptions, status
from rest_framework.response import Response
from rest_framework.views import set_rollback

from syncroot import db

logger = logging.getLogger(__name__)


class ApplicationError(Exception):
    """A failure the client should see, with a stable machine-readable code."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "bad_request"

    def __init__(self, message: str, *, details: Any = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        self.headers = headers or {}


class NotFound(ApplicationError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"


class Conflict(ApplicationError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"


class Gone(ApplicationError):
    """The resource was merged into another (its id in `details`) or is otherwise gone for good."""

    status_code = status.HTTP_410_GONE
    code = "gone"


class PreconditionFailed(ApplicationError):
    status_code = status.HTTP_412_PRECONDITION_FAILED
    code = "precondition_failed"


class UnprocessableEntity(ApplicationError):
    status_code = status.HTTP_422_UNPROCESSABLE_ENTITY
    code = "unprocessable_entity"


class ServiceUnavailable(ApplicationError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "service_unavailable"


def error_body(code: str, message: str, details: Any = None) -> dict[str, Any]:
    return {"code": code, "message": message, "details": details if details is not None else {}}


_DRF_CODES = {
    exceptions.ParseError: ("malformed_request", None),
    exceptions.NotAuthenticated: ("unauthenticated", None),
    exceptions.AuthenticationFailed: ("unauthenticated", None),
    exceptions.PermissionDenied: ("permission_denied", None),
    exceptions.NotFound: ("not_found", "Not found."),
    exceptions.MethodNotAllowed: ("method_not_allowed", None),
    exceptions.NotAcceptable: ("not_acceptable", None),
    exceptions.UnsupportedMediaType: ("unsupported_media_type", None),
    exceptions.Throttled: ("throttled", None),
}


def _is_redis_error(exc: Exception) -> bool:
    # Imported lazily: the API process may run without the redis client imported yet.
    from kombu.exceptions import OperationalError as KombuOperationalError
    from redis.exceptions import RedisError

    return isinstance(exc, (RedisError, KombuOperationalError))


def exception_handler(exc: Exception, context: dict) -> Response | None:
    headers: dict[str, str] = {}
    if isinstance(exc, ApplicationError):
        set_rollback()
        return Response(error_body(exc.code, exc.message, exc.details), status=exc.status_code, headers=exc.headers)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, RequestDataTooBig):
        return Response(
            error_body("payload_too_large", "The request body is too large."),
            status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
        )
    if isinstance(exc, exceptions.ValidationError):
        set_rollback()
        return Response(
            error_body("validation_error", "The request is not valid.", exc.detail), status=status.HTTP_400_BAD_REQUEST
        )
    if isinstance(exc, exceptions.APIException):
        set_rollback()
        code, message = next(
            ((c, m) for cls, (c, m) in _DRF_CODES.items() if isinstance(exc, cls)), (exc.default_code, None)
        )
        if isinstance(exc, exceptions.ParseError):
            code = "malformed_json"
        if getattr(exc, "auth_header", None):
            headers["WWW-Authenticate"] = exc.auth_header
        if getattr(exc, "wait", None) is not None:  # 0 too: a window about to reset still says "1"
            headers["Retry-After"] = str(int(exc.wait) + 1)
        detail = exc.detail if isinstance(exc.detail, str) else str(exc.detail)
        return Response(error_body(code, message or detail), status=exc.status_code, headers=headers)
    if isinstance(exc, (DatabaseError, InterfaceError)):  # InterfaceError is no DatabaseError (PEP 249)
        return _database_error(exc)
    if _is_redis_error(exc):
        logger.warning("redis unavailable", extra={"error": str(exc)})
        return Response(
            error_body("service_unavailable", "The broker is unavailable; retry shortly.", {"service": "redis"}),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return None  # unexpected: Django's handler500 answers with JSON


def _database_error(exc: DatabaseError | InterfaceError) -> Response | None:
    """A lost race or a slow statement is not an outage: each has its own code and a traceback."""
    if db.is_conflict(exc):
        logger.error("database conflict", exc_info=exc, extra={"pgcode": db.pgcode(exc)})
        return Response(
            error_body(
                "database_conflict", "The request collided with another one; retry it.", {"service": "database"}
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "1"},
        )
    if db.is_timeout(exc):
        logger.error("database statement timed out", exc_info=exc, extra={"pgcode": db.pgcode(exc)})
        return Response(
            error_body(
                "database_timeout", "The database took too long to answer; retry shortly.", {"service": "database"}
            ),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    if db.is_unavailable(exc):
        logger.warning("database unavailable", extra={"error": str(exc), "pgcode": db.pgcode(exc)})
        return Response(
            error_body("service_unavailable", "The database is unavailable; retry shortly.", {"service": "database"}),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": "5"},
        )
    return None  # a bug (bad SQL, a broken constraint): Django logs it and handler500 answers


def _json(status_code: int, code: str, message: str) -> JsonResponse:
    return JsonResponse(error_body(code, message), status=status_code)


def handler400(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json(400, "bad_request", "The request could not be understood.")


def handler403(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json(403, "permission_denied", "You do not have permission to perform this action.")


def handler404(request: HttpRequest, exception: Exception | None = None) -> JsonResponse:
    return _json(404, "not_found", "Not found.")


def handler500(request: HttpRequest) -> JsonResponse:
    return _json(500, "internal_error", "An unexpected error occurred; it has been logged.")
