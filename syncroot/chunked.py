"""Chunked request bodies, read whole before Django sees the request.

A `Transfer-Encoding: chunked` request declares no Content-Length, and Django reads a body without
one as empty: a JSON contact sent chunked would be refused as missing every field. The WSGI server
ends the raw input at the last chunk (gunicorn sets `wsgi.input_terminated`), so this wrapper reads
it, up to the body limit and never more than one byte beyond, and hands Django a body of declared
length. A larger body is answered 413 in the API's error shape without reading the rest.
"""

import io
import json
from collections.abc import Callable, Iterable
from typing import Any

READ_CHUNK = 64 * 1024

StartResponse = Callable[..., Any]
WsgiApp = Callable[[dict, StartResponse], Iterable[bytes]]


def read_limited(stream: Any, limit: int) -> bytes | None:
    """Everything `stream` holds, or None when that is more than `limit` bytes."""
    parts, size = [], 0
    while size <= limit:
        part = stream.read(min(READ_CHUNK, limit + 1 - size))
        if not part:
            break
        parts.append(part)
        size += len(part)
    return None if size > limit else b"".join(parts)


class ChunkedBodyMiddleware:
    def __init__(self, app: WsgiApp, *, limit: Callable[[], int]) -> None:
        self.app = app
        self.limit = limit  # read per request: settings are configured after this module is imported

    def __call__(self, environ: dict, start_response: StartResponse) -> Iterable[bytes]:
        chunked = "chunked" in environ.get("HTTP_TRANSFER_ENCODING", "").lower()
        if chunked and not environ.get("CONTENT_LENGTH") and environ.get("wsgi.input_terminated"):
            limit = self.limit()
            body = read_limited(environ["wsgi.input"], limit)
            if body is None:
                from syncroot.errors import error_body  # after Django is set up (it imports DRF)

                payload = json.dumps(
                    error_body("payload_too_large", "The request body is too large.", {"max_bytes": limit})
                ).encode()
                start_response(
                    "413 Request Entity Too Large",
                    [
                        ("Content-Type", "application/json"),
                        ("Content-Length", str(len(payload))),
                        ("Connection", "close"),
                    ],
                )
                return [payload]
            environ["CONTENT_LENGTH"] = str(len(body))
            environ["wsgi.input"] = io.BytesIO(body)
        return self.app(environ, start_response)
