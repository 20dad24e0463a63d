"""The authorization-code flow's browser side, shared by both sandboxes: a consent page (an HTML
form a person, or a test driving it like a browser, posts), the redirect back to the app, and the
one-time codes it hands out.

Each CRM shows its own page (HubSpot "Connect app", Salesforce "Allow Access?") and names its own
errors; what they share is here: the form, the redirect with ``code``/``state`` (or ``error``),
codes that work once, for the client and redirect URI they were issued to, for a few minutes.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from html import escape
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from werkzeug.wrappers import Response

__all__ = ["AuthCode", "CodeRegistry", "consent_page", "error_page", "pkce_matches", "redirect_with", "valid_redirect"]


@dataclass
class AuthCode:
    client_id: str
    redirect_uri: str
    scope: str
    expires_at: float
    code_challenge: str = ""
    code_challenge_method: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


class CodeRegistry:
    """Authorization codes: issued on consent, exchanged once. Thread-safe."""

    def __init__(self, *, ttl_s: float, prefix: str = "") -> None:
        self.ttl_s = ttl_s
        self.prefix = prefix
        self._codes: dict[str, AuthCode] = {}
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.monotonic

    def issue(self, **details: Any) -> str:
        code = self.prefix + secrets.token_urlsafe(32)
        with self._lock:
            now = self.clock()
            if len(self._codes) > 1000:
                self._codes = {c: v for c, v in self._codes.items() if v.expires_at > now}
            self._codes[code] = AuthCode(expires_at=now + self.ttl_s, **details)
        return code

    def take(self, code: str) -> AuthCode | None:
        """The code's details, once; None when unknown, used already or expired."""
        with self._lock:
            found = self._codes.pop(code, None)
        if found is None or found.expires_at <= self.clock():
            return None
        return found

    def clear(self) -> None:
        with self._lock:
            self._codes.clear()


def pkce_matches(verifier: str, challenge: str, method: str) -> bool:
    """RFC 7636: S256 is base64url(sha256(verifier)) without padding; plain is the verifier itself."""
    if not verifier:
        return False
    if (method or "plain").upper() == "S256":
        digest = hashlib.sha256(verifier.encode("ascii", "replace")).digest()
        expected = base64.urlsafe_b64encode(digest).rstrip(b"=").decode()
    else:
        expected = verifier
    return hmac.compare_digest(expected.encode(), challenge.encode())


def valid_redirect(uri: str, allowed: tuple[str, ...]) -> bool:
    """An absolute http(s) URL, and one of the app's registered ones when it has any."""
    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        return False
    return not allowed or uri in allowed


def redirect_with(uri: str, params: Mapping[str, str]) -> Response:
    """302 to ``uri`` with ``params`` added to its query string."""
    parts = urlsplit(uri)
    query = "&".join(part for part in (parts.query, urlencode({k: v for k, v in params.items() if v})) if part)
    location = urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))
    return Response(b"", status=302, headers={"Location": location, "Cache-Control": "no-store"})


def consent_page(
    *, title: str, app_name: str, account: str, scopes: list[str], action: str, fields: Mapping[str, str]
) -> Response:
    """The page a person approves an app on: a form posting ``fields`` back with ``decision``."""
    hidden = "".join(
        f'<input type="hidden" name="{escape(name)}" value="{escape(value)}">'
        for name, value in fields.items()
        if value
    )
    items = "".join(f"<li>{escape(scope)}</li>" for scope in scopes)
    body = (
        f"<!DOCTYPE html><html><head><title>{escape(title)}</title></head><body>"
        f"<h1>{escape(title)}</h1><p><strong>{escape(app_name)}</strong> asks to access {escape(account)}:</p>"
        f'<ul class="scopes">{items}</ul>'
        f'<form id="consent" method="post" action="{escape(action)}">{hidden}'
        '<button type="submit" name="decision" value="allow">Allow</button>'
        '<button type="submit" name="decision" value="deny">Deny</button>'
        "</form></body></html>"
    )
    return Response(body, status=200, content_type="text/html; charset=utf-8", headers={"Cache-Control": "no-store"})


def error_page(status: int, error: str, description: str) -> Response:
    """The HTML page a CRM shows instead of redirecting when it cannot trust the redirect URI."""
    body = (
        f"<!DOCTYPE html><html><head><title>Error</title></head><body><h1>{escape(error)}</h1>"
        f'<p class="error_description">{escape(description)}</p></body></html>'
    )
    return Response(body, status=status, content_type="text/html; charset=utf-8")
