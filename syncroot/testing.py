"""Test helpers shared by the apps' test suites."""

import json


def assert_error(response, status: int, code: str) -> dict:
    """The response is the API's JSON error with this status and code; returns its body."""
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = json.loads(response.content)
    assert set(body) == {"code", "message", "details"}
    assert body["code"] == code
    assert body["message"]
    return body
