"""Sessions of the sandbox org: OAuth 2.0 token endpoint, SOAP login, Bearer checks.

Every login maps to the integration user. Access tokens expire after
``token_ttl_s`` (a stale one is answered 401 ``INVALID_SESSION_ID``, which makes
simple-salesforce log in again); the static ``token`` never expires.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any
from xml.sax.saxutils import escape

from defusedxml import ElementTree
from werkzeug.wrappers import Request, Response

from sandbox.consent import CodeRegistry, pkce_matches
from sandbox.core import json_response
from sandbox.salesforce_lifecycle import parse_call, soap_call, soap_fault
from sandbox.salesforce_schema import INTEGRATION_USER_ID, UI_USER_ID, normalize_id

__all__ = [
    "AuthMixin",
    "OAuthError",
    "SessionRegistry",
    "login_fault",
    "login_response",
    "oauth_error",
    "parse_soap_login",
]

_TOKEN_CHARS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._"


class OAuthError(Exception):
    """A refused token request: HTTP status plus the OAuth ``error`` / ``error_description``."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


def oauth_error(error: OAuthError) -> Response:
    body = json.dumps({"error": error.error, "error_description": error.description})
    return Response(body, status=error.status, content_type="application/json;charset=UTF-8")


class SessionRegistry:
    """Issued access tokens (with expiry) and refresh tokens. Thread-safe.

    An access token remembers the refresh token it came from: revoking a refresh token revokes
    every access token it issued, as the CRM does.
    """

    def __init__(self, organization_id: str) -> None:
        self.organization_id = organization_id
        self._access: dict[str, float] = {}
        self._issued: dict[str, tuple[float, str | None]] = {}  # access token → (issued at, refresh token)
        self._refresh: dict[str, str] = {}  # refresh token → scope
        self._lock = threading.Lock()
        self.clock: Callable[[], float] = time.time  # tests replace it to expire tokens without sleeping

    def _new_token(self) -> str:
        random_part = "".join(secrets.choice(_TOKEN_CHARS) for _ in range(96))
        return f"{self.organization_id[:15]}!AQ{random_part}"

    def issue(
        self, ttl_s: float, *, with_refresh: bool, parent: str | None = None, scope: str = "api refresh_token"
    ) -> tuple[str, str | None]:
        access = self._new_token()
        refresh = "5Aep" + "".join(secrets.choice(_TOKEN_CHARS[:62]) for _ in range(83)) if with_refresh else None
        with self._lock:
            now = self.clock()
            self._access[access] = now + ttl_s
            self._issued[access] = (now, refresh or parent)
            if refresh:
                self._refresh[refresh] = scope
        return access, refresh

    def valid(self, token: str) -> bool:
        with self._lock:
            expiry = self._access.get(token)
            if expiry is not None and expiry <= self.clock():
                del self._access[token]
                self._issued.pop(token, None)
                return False
            return expiry is not None

    def has_refresh(self, token: str) -> bool:
        with self._lock:
            return token in self._refresh

    def describe(self, token: str) -> dict[str, Any] | None:
        """Introspection facts of a live token: kind, scope, issued and expiry times (epoch s)."""
        with self._lock:
            if token in self._refresh:
                return {"token_type": "refresh_token", "scope": self._refresh[token]}
            expiry = self._access.get(token)
            if expiry is None or expiry <= self.clock():
                return None
            issued_at, parent = self._issued.get(token, (expiry, None))
            scope = self._refresh.get(parent or "", "api")
            return {"token_type": "access_token", "scope": scope, "iat": int(issued_at), "exp": int(expiry)}

    def revoke(self, token: str) -> bool:
        with self._lock:
            found = self._access.pop(token, None) is not None
            self._issued.pop(token, None)
            if self._refresh.pop(token, None) is not None:
                found = True
                for access in [a for a, (_, parent) in self._issued.items() if parent == token]:
                    self._access.pop(access, None)
                    del self._issued[access]
            return found

    def expire_all(self) -> int:
        """Make every issued access token stale (refresh tokens stay valid)."""
        with self._lock:
            count = len(self._access)
            self._access.clear()
            self._issued.clear()
            return count


def client_credentials(request: Request, form: Mapping[str, str]) -> tuple[str, str]:
    """(client_id, client_secret) from the form or an HTTP Basic header."""
    header = request.headers.get("Authorization", "")
    if header.startswith("Basic "):
        try:
            decoded = base64.b64decode(header[6:]).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise OAuthError("invalid_client", "invalid client credentials") from None
        client_id, _, secret = decoded.partition(":")
        return client_id, secret
    return form.get("client_id", ""), form.get("client_secret", "")


def token_signature(identity_url: str, issued_at: str, client_secret: str) -> str:
    """The CRM's ``signature``: base64 HMAC-SHA256 of id + issued_at, keyed by the secret."""
    digest = hmac.new(client_secret.encode(), (identity_url + issued_at).encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


# --- SOAP login ---------------------------------------------------------------------

_PARTNER_NS = "{urn:partner.soap.sforce.com}"


def parse_soap_login(body: bytes) -> tuple[str, str] | None:
    """(username, password) of a partner ``login`` call, or None when absent."""
    try:
        root = ElementTree.fromstring(body)
    except Exception:  # defusedxml raises several types for hostile or broken XML
        return None
    username = password = None
    for element in root.iter():
        tag = element.tag.removeprefix(_PARTNER_NS)
        if tag == "username":
            username = element.text or ""
        elif tag == "password":
            password = element.text or ""
    if not username or not password:
        return None
    return username, password


def login_response(
    *, base_url: str, api_version: str, organization_id: str, user_id: str, username: str, session_id: str, ttl_s: float
) -> Response:
    """The partner ``loginResponse`` (``sessionId``/``serverUrl`` unprefixed, as clients expect)."""
    org15 = organization_id[:15]
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns="urn:partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><loginResponse><result>'
        f"<metadataServerUrl>{escape(base_url)}/services/Soap/m/{api_version}/{org15}</metadataServerUrl>"
        "<passwordExpired>false</passwordExpired><sandbox>true</sandbox>"
        f"<serverUrl>{escape(base_url)}/services/Soap/u/{api_version}/{org15}</serverUrl>"
        f"<sessionId>{session_id}</sessionId><userId>{user_id}</userId>"
        f"<userInfo><organizationId>{organization_id}</organizationId><sessionSecondsValid>{int(ttl_s)}"
        f"</sessionSecondsValid><userEmail>{escape(username)}</userEmail><userId>{user_id}</userId>"
        f"<userName>{escape(username)}</userName></userInfo>"
        "</result></loginResponse></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status=200, content_type="text/xml;charset=UTF-8")


def login_fault(
    code: str = "INVALID_LOGIN", message: str = "Invalid username, password, security token; or user locked out."
) -> Response:
    """A partner SOAP fault (HTTP 500) with ``sf:exceptionCode`` / ``sf:exceptionMessage``."""
    body = (
        '<?xml version="1.0" encoding="UTF-8"?><soapenv:Envelope '
        'xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:sf="urn:fault.partner.soap.sforce.com" '
        'xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"><soapenv:Body><soapenv:Fault>'
        f"<faultcode>sf:{code}</faultcode><faultstring>{code}: {escape(message)}</faultstring><detail>"
        f'<sf:LoginFault xsi:type="sf:LoginFault"><sf:exceptionCode>{code}</sf:exceptionCode>'
        f"<sf:exceptionMessage>{escape(message)}</sf:exceptionMessage></sf:LoginFault></detail>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )
    return Response(body, status=500, content_type="text/xml;charset=UTF-8")


def grant(
    request: Request,
    form: Mapping[str, str],
    *,
    config: Mapping[str, Any],
    sessions: SessionRegistry,
    codes: CodeRegistry | None = None,
) -> tuple[str, str | None]:
    """Check a token request; the (access token, refresh token) to return. Raises OAuthError."""
    grant_type = form.get("grant_type", "")
    if grant_type not in ("password", "refresh_token", "client_credentials", "authorization_code"):
        raise OAuthError("unsupported_grant_type", "grant type not supported")
    client_id, client_secret = client_credentials(request, form)
    if client_id != config["client_id"]:
        raise OAuthError("invalid_client_id", "client identifier invalid")
    if grant_type == "authorization_code":
        return exchange_code(form, client_secret, config=config, sessions=sessions, codes=codes)
    secret_required = grant_type != "refresh_token" or client_secret
    if secret_required and not hmac.compare_digest(client_secret.encode(), config["client_secret"].encode()):
        raise OAuthError("invalid_client", "invalid client credentials")
    ttl = config["token_ttl_s"]
    if grant_type == "password":
        if not form.get("username") or not form.get("password"):
            raise OAuthError("invalid_grant", "authentication failure")
        return sessions.issue(ttl, with_refresh=True)
    if grant_type == "refresh_token":
        refresh = form.get("refresh_token", "")
        if not sessions.has_refresh(refresh):
            raise OAuthError("invalid_grant", "expired access/refresh token")
        return sessions.issue(ttl, with_refresh=False, parent=refresh)
    return sessions.issue(ttl, with_refresh=False)


def exchange_code(
    form: Mapping[str, str],
    client_secret: str,
    *,
    config: Mapping[str, Any],
    sessions: SessionRegistry,
    codes: CodeRegistry | None,
) -> tuple[str, str | None]:
    """The web-server flow's second leg: a one-time code, its redirect URI, the PKCE verifier.

    A client secret, when sent, must be right; without one the PKCE verifier is the proof (the
    connected app's "Require Secret for Web Server Flow" off).
    """
    if client_secret and not hmac.compare_digest(client_secret.encode(), config["client_secret"].encode()):
        raise OAuthError("invalid_client", "invalid client credentials")
    code = codes.take(form.get("code", "")) if codes is not None else None
    if code is None or code.client_id != config["client_id"]:
        raise OAuthError("invalid_grant", "invalid authorization code")
    if code.redirect_uri != form.get("redirect_uri", ""):
        raise OAuthError("redirect_uri_mismatch", "redirect_uri must match configuration")
    if code.code_challenge:
        if not pkce_matches(form.get("code_verifier", ""), code.code_challenge, code.code_challenge_method):
            raise OAuthError("invalid_grant", "invalid code verifier")
    elif not client_secret:
        raise OAuthError("invalid_client", "invalid client credentials")
    scope = code.scope or "api refresh_token"
    # `offline_access` is the OpenID Connect name of the `refresh_token` scope: either brings one.
    with_refresh = bool({"refresh_token", "offline_access"} & set(scope.split()))
    return sessions.issue(config["token_ttl_s"], with_refresh=with_refresh, scope=scope)


class AuthMixin:
    """Token endpoint, SOAP login and identity handlers; mixed into the Salesforce app."""

    config: dict[str, Any]
    sessions: SessionRegistry
    codes: CodeRegistry
    _base_url: str
    make_error: Callable[..., Any]

    def versions(self, request: Request) -> Response:
        return json_response(
            [{"label": f"v{n}.0", "url": f"/services/data/v{n}.0", "version": f"{n}.0"} for n in range(31, 63)]
        )

    def oauth_token(self, request: Request) -> Response:
        form = request.form
        try:
            access, refresh = grant(request, form, config=self.config, sessions=self.sessions, codes=self.codes)
        except OAuthError as error:
            return oauth_error(error)
        identity = f"{self._base_url}/id/{self.config['organization_id']}/{INTEGRATION_USER_ID}"
        issued_at = str(int(time.time() * 1000))
        body: dict[str, Any] = {"access_token": access}
        if refresh:
            body["refresh_token"] = refresh
        body.update(
            signature=token_signature(identity, issued_at, self.config["client_secret"]),
            scope=(self.sessions.describe(access) or {}).get("scope", "api"),
            instance_url=self._base_url,
            id=identity,
            token_type="Bearer",
            issued_at=issued_at,
        )
        return json_response(body)

    def oauth_revoke(self, request: Request) -> Response:
        token = request.values.get("token", "")
        if not self.sessions.revoke(token):
            return oauth_error(OAuthError("unsupported_token_type", "this token type is not supported"))
        return Response(b"", status=200)

    def soap_login(self, request: Request, soap_version: str) -> Response:
        credentials = parse_soap_login(request.get_data())
        if credentials is None:
            call = parse_call(request.get_data())
            if call is not None and call[0] != "login":
                if not (call[1] == self.config["token"] or self.sessions.valid(call[1])):
                    return soap_fault("INVALID_SESSION_ID", "Invalid Session ID found in SessionHeader")
                self.daily_quota.hit("org")
                return soap_call(self.store, call, user_id=INTEGRATION_USER_ID)
            return login_fault()
        access, _ = self.sessions.issue(self.config["token_ttl_s"], with_refresh=False)
        return login_response(
            base_url=self._base_url,
            api_version=soap_version,
            organization_id=self.config["organization_id"],
            user_id=INTEGRATION_USER_ID,
            username=credentials[0],
            session_id=access,
            ttl_s=self.config["token_ttl_s"],
        )

    def identity(self, request: Request, org_id: str, user_id: str) -> Response:
        if normalize_id(org_id) != self.config["organization_id"] or normalize_id(user_id) not in (
            INTEGRATION_USER_ID,
            UI_USER_ID,
        ):
            raise self.make_error(404, "NOT_FOUND", "")
        return json_response(
            {
                "id": f"{self._base_url}/id/{org_id}/{user_id}",
                "user_id": normalize_id(user_id),
                "organization_id": self.config["organization_id"],
                "username": "integration@sandbox.example",
                "display_name": "Integration User",
                "active": True,
                "user_type": "STANDARD",
                "urls": {"rest": f"{self._base_url}/services/data/v{{version}}/"},
            }
        )

    def userinfo(self, request: Request) -> Response:
        """OpenID Connect userinfo of the token's user (every token is the integration user's)."""
        org_id = self.config["organization_id"]
        return json_response(
            {
                "sub": f"{self._base_url}/id/{org_id}/{INTEGRATION_USER_ID}",
                "user_id": INTEGRATION_USER_ID,
                "organization_id": org_id,
                "preferred_username": "integration@sandbox.example",
                "name": "Integration User",
                "email": "integration@sandbox.example",
                "email_verified": True,
                "active": True,
                "user_type": "STANDARD",
                "language": "en_US",
                "locale": "en_US",
                "utcOffset": 0,
            }
        )

    def _control_expire_tokens(self, request: Request) -> Response:
        return json_response({"expired": self.sessions.expire_all()})
