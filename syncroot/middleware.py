"""Refuse oversized bodies with a JSON 413 before any view reads them."""

from collections.abc import Callable

from django.conf import settings
from django.http import HttpRequest, HttpResponse, JsonResponse

from syncroot.errors import error_body


class BodySizeLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response
        self.limit = settings.API_MAX_BODY_BYTES

    def __call__(self, request: HttpRequest) -> HttpResponse:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body("bad_request", "Invalid Content-Length header."), status=400)
        if length > self.limit and not request.path.startswith("/admin/"):
            return JsonResponse(
                error_body("payload_too_large", "The request body is too large.", {"max_bytes": self.limit}),
                status=413,
            )
        return self.get_response(request)
