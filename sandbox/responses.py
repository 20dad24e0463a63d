"""JSON responses and the provider-shaped API error the sandboxes raise."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from werkzeug.wrappers import Response

__all__ = ["JSON_CONTENT_TYPE", "ApiError", "empty_response", "json_response"]

JSON_CONTENT_TYPE = "application/json;charset=utf-8"
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


class ApiError(Exception):
    """An HTTP error answered with a provider-shaped JSON body.

    ``body`` is any JSON-serialisable value (HubSpot: an object, Salesforce: an
    array); ``headers`` are extra response headers (e.g. ``Retry-After``).
    """

    def __init__(self, status: int, body: Any, headers: Iterable[tuple[str, str]] = ()) -> None:
        super().__init__(status, body)
        self.status = status
        self.body = body
        self.headers = list(headers)

    def to_response(self) -> Response:
        return json_response(self.body, self.status, self.headers)


def json_response(data: Any, status: int = 200, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """Serialise ``data`` compactly as a JSON response."""
    response = Response(_dumps(data), status=status, content_type=JSON_CONTENT_TYPE)
    for name, value in headers:
        response.headers[name] = value
    return response


def empty_response(status: int = 204, headers: Iterable[tuple[str, str]] = ()) -> Response:
    """A body-less response (204 No Content by default)."""
    response = Response(b"", status=status)
    response.headers.remove("Content-Type")
    for name, value in headers:
        response.headers[name] = value
    return response
