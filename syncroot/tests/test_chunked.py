"""Chunked request bodies reach the API whole (the WSGI entry point reads them), or get a JSON 413."""

import io
import json

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections

from contacts.models import Contact
from syncroot.wsgi import application

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def keep_the_test_connection():
    """The WSGI handler closes database connections around each request; the test's transaction
    lives on that connection, so keep it open (as the test client does)."""
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


class CountingStream(io.BytesIO):
    """The raw input as the WSGI server ends it at the last chunk; remembers how much was read."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self.consumed = 0

    def read(self, size: int = -1) -> bytes:
        data = super().read(size)
        self.consumed += len(data)
        return data


def call(
    body: bytes, *, token: str, chunked: bool = True, path: str = "/contacts"
) -> tuple[str, dict, bytes, CountingStream]:
    stream = CountingStream(body)
    environ = {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": path,
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "HTTP_HOST": "127.0.0.1",
        "HTTP_AUTHORIZATION": f"Bearer {token}",
        "wsgi.input": stream,
        "wsgi.url_scheme": "http",
        "wsgi.errors": io.StringIO(),
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if chunked:  # as gunicorn presents a chunked request: no length, the stream ends at the last chunk
        environ.update({"HTTP_TRANSFER_ENCODING": "chunked", "wsgi.input_terminated": True})
    else:
        environ["CONTENT_LENGTH"] = str(len(body))
    seen: dict = {}

    def start_response(status: str, headers: list, exc_info=None) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    result = application(environ, start_response)
    content = b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return seen["status"], seen["headers"], content, stream


def test_a_chunked_json_contact_is_read_whole_and_created(api_token):
    body = json.dumps({"email": "chunked@example.com", "first_name": "Chünk"}).encode()

    status, headers, content, _ = call(body, token=api_token.raw)

    assert status.startswith("201"), content
    assert json.loads(content)["first_name"] == "Chünk"
    assert Contact.objects.get(email="chunked@example.com").first_name == "Chünk"


def test_a_chunked_body_over_the_limit_is_413_json_without_reading_it_all(api_token, settings):
    settings.API_MAX_BODY_BYTES = settings.WEBHOOK_MAX_BODY_BYTES = 1000
    body = b'{"email": "big@example.com", "first_name": "' + b"x" * 100_000 + b'"}'

    status, headers, content, stream = call(body, token=api_token.raw)

    assert status.startswith("413")
    assert headers["Content-Type"] == "application/json"
    assert json.loads(content) == {
        "code": "payload_too_large",
        "message": "The request body is too large.",
        "details": {"max_bytes": 1000},
    }
    assert stream.consumed == 1001
    assert not Contact.objects.exists()


def test_a_body_with_content_length_is_passed_through_untouched(api_token):
    body = json.dumps({"email": "plain@example.com"}).encode()

    status, _, content, stream = call(body, token=api_token.raw, chunked=False)

    assert status.startswith("201"), content
    assert stream.consumed == len(body)
    assert Contact.objects.filter(email="plain@example.com").exists()


def test_malformed_chunked_json_is_a_json_400(api_token):
    status, headers, content, _ = call(b'{"email": ', token=api_token.raw)

    assert status.startswith("400")
    assert json.loads(content)["code"] == "malformed_json"
