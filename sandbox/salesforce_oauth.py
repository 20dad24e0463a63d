"""Salesforce's OAuth 2.0 web-server flow (with PKCE), introspection and the revoke endpoint.

- ``GET /services/oauth2/authorize?response_type=code&client_id&redirect_uri&state&scope
  &code_challenge&code_challenge_method=S256``: the "Allow Access?" page (the sandbox's user is
  always logged in); posting it redirects to ``redirect_uri?code=&state=``, or with
  ``error=access_denied`` when denied. A client id or callback URL the CRM cannot trust is an
  error page, never a redirect.
- ``POST /services/oauth2/token`` ``grant_type=authorization_code`` (``code``, ``redirect_uri``,
  ``code_verifier``): see :func:`sandbox.salesforce_auth.exchange_code`.
- ``POST /services/oauth2/introspect`` (``token``, ``token_type_hint``, client credentials):
  ``{"active": true, "scope", "client_id", "username", "sub", "token_type", "exp", "iat", "nbf"}``
  or ``{"active": false}``.
- ``POST /services/oauth2/revoke`` (``token``): revoking a refresh token revokes the access
  tokens it issued.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.consent import CodeRegistry, consent_page, error_page, redirect_with, valid_redirect
from sandbox.core import json_response
from sandbox.salesforce_auth import OAuthError, SessionRegistry, client_credentials, oauth_error
from sandbox.salesforce_schema import INTEGRATION_USER_ID

__all__ = ["CODE_TTL_S", "WebServerFlow"]

CODE_TTL_S = 15 * 60  # the CRM's authorization codes expire after 15 minutes
USERNAME = "integration@sandbox.example"


class WebServerFlow:
    """Authorize page, introspection; mixed into :class:`sandbox.salesforce.SalesforceApp`."""

    config: dict[str, Any]
    sessions: SessionRegistry
    codes: CodeRegistry
    _base_url: str
    api: Callable[..., None]

    def setup_oauth_routes(self) -> None:
        self.codes = CodeRegistry(ttl_s=CODE_TTL_S, prefix="aPrx")
        self.api("GET", "/services/oauth2/authorize", self.oauth_authorize, auth=False)
        self.api("POST", "/services/oauth2/authorize", self.oauth_consent, auth=False)
        self.api("POST", "/services/oauth2/introspect", self.oauth_introspect, auth=False)

    def _untrusted(self, client_id: str, redirect_uri: str) -> Response | None:
        if client_id != self.config["client_id"]:
            return error_page(400, "OAUTH_EC_APP_NOT_FOUND", "invalid_client_id: client identifier invalid")
        if not valid_redirect(redirect_uri, self.config["callback_urls"]):
            return error_page(400, "redirect_uri_mismatch", "redirect_uri must match configuration")
        return None

    def oauth_authorize(self, request: Request) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        refused = self._untrusted(args.get("client_id", ""), redirect_uri)
        if refused is not None:
            return refused
        state = args.get("state", "")
        if args.get("response_type") != "code":
            description = "response type not supported"
            return redirect_with(
                redirect_uri, {"error": "unsupported_response_type", "error_description": description, "state": state}
            )
        method = args.get("code_challenge_method", "")
        if args.get("code_challenge") and method.upper() not in ("", "S256", "PLAIN"):
            return redirect_with(
                redirect_uri,
                {"error": "invalid_request", "error_description": "invalid code_challenge_method", "state": state},
            )
        scope = args.get("scope") or "api refresh_token"
        fields = {
            "client_id": self.config["client_id"],
            "redirect_uri": redirect_uri,
            "scope": scope,
            "state": state,
            "code_challenge": args.get("code_challenge", ""),
            "code_challenge_method": method,
        }
        return consent_page(
            title="Allow Access?",
            app_name="SyncRoot connected app",
            account=f"organization {self.config['organization_id']} as {USERNAME}",
            scopes=scope.split(),
            action="/services/oauth2/authorize",
            fields=fields,
        )

    def oauth_consent(self, request: Request) -> Response:
        form = request.form
        redirect_uri = form.get("redirect_uri", "")
        refused = self._untrusted(form.get("client_id", ""), redirect_uri)
        if refused is not None:
            return refused
        state = form.get("state", "")
        if form.get("decision") != "allow":
            return redirect_with(
                redirect_uri,
                {"error": "access_denied", "error_description": "end-user denied authorization", "state": state},
            )
        code = self.codes.issue(
            client_id=form["client_id"],
            redirect_uri=redirect_uri,
            scope=form.get("scope", ""),
            code_challenge=form.get("code_challenge", ""),
            code_challenge_method=form.get("code_challenge_method", ""),
        )
        return redirect_with(redirect_uri, {"code": code, "state": state})

    def oauth_introspect(self, request: Request) -> Response:
        client_id, secret = client_credentials(request, request.form)
        if client_id != self.config["client_id"] or not hmac.compare_digest(
            secret.encode(), self.config["client_secret"].encode()
        ):
            return oauth_error(OAuthError("invalid_client", "invalid client credentials", 401))
        facts = self.sessions.describe(request.form.get("token", ""))
        if facts is None:
            return json_response({"active": False})
        body = {
            "active": True,
            "scope": facts["scope"],
            "client_id": client_id,
            "username": USERNAME,
            "sub": f"{self._base_url}/id/{self.config['organization_id']}/{INTEGRATION_USER_ID}",
            "token_type": facts["token_type"],
        }
        if "exp" in facts:
            body.update(exp=facts["exp"], iat=facts["iat"], nbf=facts["iat"])
        return json_response(body)
