"""HubSpot's OAuth 2.0 and account endpoints, as the CRM answers them.

- ``GET /oauth/authorize?client_id&redirect_uri&scope&state`` (app.hubspot.com in the CRM): the
  consent page; posting it with ``decision=allow`` redirects to ``redirect_uri?code=&state=``.
- ``POST /oauth/v1/token`` (form): ``authorization_code`` (the code works once, for the
  redirect URI it was issued to) and ``refresh_token`` (the refresh token stays valid) →
  ``{"token_type": "bearer", "refresh_token", "access_token", "expires_in"}``; refusals are 400
  ``{"status": "BAD_…", "message"}``.
- ``GET /oauth/v1/access-tokens/{token}`` (``hub_id``, ``app_id``, ``scopes``, ``expires_in``…),
  ``GET /oauth/v1/refresh-tokens/{token}`` and ``DELETE`` of it (the app uninstalled: the
  refresh token and every access token it issued stop working at once).
- ``GET /account-info/v3/details``: ``portalId`` for any valid token (private-app included).

Access tokens last ``token_ttl_s``; a stale one is 401 ``EXPIRED_AUTHENTICATION``.
"""

from __future__ import annotations

import secrets
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.consent import CodeRegistry, consent_page, error_page, redirect_with, valid_redirect
from sandbox.core import ApiError, empty_response, json_response
from sandbox.hubspot_store import hs_error

__all__ = ["OAuthRoutes"]

AUTH_MESSAGE = (
    "Authentication credentials not found. This API supports OAuth 2.0 authentication and you can find more "
    "details at https://developers.hubspot.com/docs/methods/auth/oauth-overview"
)
DEFAULT_SCOPES = "crm.objects.contacts.read crm.objects.contacts.write oauth"
CODE_TTL_S = 600.0
USER_EMAIL = "sandbox@example.com"


@dataclass
class Grant:
    """What an installation of the app granted: its scopes (one per refresh token)."""

    scopes: list[str]


def _refuse(status: str, message: str) -> ApiError:
    return ApiError(400, {"status": status, "message": message, "correlationId": str(uuid.uuid4())})


class OAuthRoutes:
    """OAuth and account-info handlers; mixed into :class:`sandbox.hubspot.HubSpotApp`."""

    config: dict[str, Any]
    router: Any
    clock: Callable[[], float]

    def init_oauth(self) -> None:
        self._tokens: dict[str, float] = {}  # OAuth access token → expiry (clock)
        self._issued_by: dict[str, str] = {}  # access token → the refresh token it came from
        self._grants: dict[str, Grant] = {}  # live refresh tokens
        self._revoked: set[str] = set()  # refresh tokens deleted (the app uninstalled)
        self._tokens_lock = threading.Lock()
        self.codes = CodeRegistry(ttl_s=CODE_TTL_S, prefix="na1-")

    def add_oauth_routes(self) -> None:
        add = self.router.add
        add("GET", "/oauth/authorize", self.oauth_authorize, auth=False)
        add("POST", "/oauth/authorize", self.oauth_consent, auth=False)
        add("POST", "/oauth/v1/token", self.oauth_token, auth=False)
        add("GET", "/oauth/v1/access-tokens/{token}", self.oauth_token_info, auth=False)
        add("GET", "/oauth/v1/refresh-tokens/{token}", self.oauth_refresh_info, auth=False)
        add("DELETE", "/oauth/v1/refresh-tokens/{token}", self.oauth_revoke, auth=False)
        add("GET", "/account-info/v3/details", self.account_details)

    def oauth_config_changed(self, keys: set[str]) -> None:
        if "refresh_token" in keys:  # setting it (again) re-authorises the app with that token
            with self._tokens_lock:
                self._revoked.discard(self.config["refresh_token"])

    # -- authentication of API calls ----------------------------------------------------

    def check_oauth_token(self, token: str) -> None:
        expiry = self._tokens.get(token) if token else None
        if expiry is None:
            raise hs_error(401, "INVALID_AUTHENTICATION", AUTH_MESSAGE)
        late = self.clock() - expiry
        if late >= 0:
            message = f"The OAuth token used to make this call expired {int(late)} second(s) ago."
            raise hs_error(401, "EXPIRED_AUTHENTICATION", message)

    def _refresh_known(self, token: str) -> bool:
        if token in self._revoked:
            return False
        return token == self.config["refresh_token"] or token in self._grants

    # -- the browser side ---------------------------------------------------------------------

    def oauth_authorize(self, request: Request) -> Response:
        args = request.args
        redirect_uri = args.get("redirect_uri", "")
        if args.get("client_id") != self.config["client_id"]:
            return error_page(400, "BAD_CLIENT_ID", "This app's client id is not valid.")
        if not valid_redirect(redirect_uri, self.config["redirect_uris"]):
            return error_page(400, "BAD_REDIRECT_URI", "The redirect URL does not match the app's redirect URLs.")
        scopes = (args.get("scope") or DEFAULT_SCOPES).split()
        fields = {
            "client_id": self.config["client_id"],
            "redirect_uri": redirect_uri,
            "scope": " ".join(scopes),
            "optional_scope": args.get("optional_scope", ""),
            "state": args.get("state", ""),
        }
        return consent_page(
            title="Connect app",
            app_name=f"App {self.config['app_id']}",
            account=f"HubSpot account {self.config['portal_id']}",
            scopes=scopes,
            action="/oauth/authorize",
            fields=fields,
        )

    def oauth_consent(self, request: Request) -> Response:
        form = request.form
        redirect_uri = form.get("redirect_uri", "")
        if form.get("client_id") != self.config["client_id"] or not valid_redirect(
            redirect_uri, self.config["redirect_uris"]
        ):
            return error_page(400, "BAD_REQUEST", "The authorization request is not valid.")
        state = form.get("state", "")
        if form.get("decision") != "allow":
            return redirect_with(redirect_uri, {"error": "access_denied", "state": state})
        code = self.codes.issue(client_id=form["client_id"], redirect_uri=redirect_uri, scope=form.get("scope", ""))
        return redirect_with(redirect_uri, {"code": code, "state": state})

    # -- token endpoint ---------------------------------------------------------------------

    def oauth_token(self, request: Request) -> Response:
        form, config = request.form, self.config
        grant = form.get("grant_type", "")
        if grant not in ("refresh_token", "authorization_code"):
            raise _refuse("BAD_GRANT_TYPE", "missing or invalid grant_type")
        if form.get("client_id") != config["client_id"]:
            raise _refuse("BAD_CLIENT_ID", "missing or invalid client_id")
        if form.get("client_secret") != config["client_secret"]:
            raise _refuse("BAD_CLIENT_SECRET", "missing or invalid client_secret")
        if grant == "refresh_token":
            refresh = form.get("refresh_token", "")
            with self._tokens_lock:
                if not self._refresh_known(refresh):
                    raise _refuse("BAD_REFRESH_TOKEN", "missing or unknown refresh token")
                self._grants.setdefault(refresh, Grant(DEFAULT_SCOPES.split()))
        else:
            code = self.codes.take(form.get("code", ""))
            if code is None or code.client_id != form.get("client_id"):
                raise _refuse("BAD_AUTH_CODE", "missing or unknown auth code")
            if code.redirect_uri != form.get("redirect_uri"):
                raise _refuse("BAD_REDIRECT_URI", "redirect_uri does not match initial auth code URL")
            refresh = str(uuid.uuid4())
            with self._tokens_lock:
                self._grants[refresh] = Grant((code.scope or DEFAULT_SCOPES).split())
        access = "CN" + secrets.token_urlsafe(48)
        ttl = config["token_ttl_s"]
        with self._tokens_lock:
            now = self.clock()
            if len(self._tokens) > 10_000:
                self._tokens = {token: expiry for token, expiry in self._tokens.items() if expiry > now}
                self._issued_by = {a: r for a, r in self._issued_by.items() if a in self._tokens}
            self._tokens[access] = now + ttl
            self._issued_by[access] = refresh
        body = {"token_type": "bearer", "refresh_token": refresh, "access_token": access, "expires_in": int(ttl)}
        return json_response(body)

    # -- token information and revocation ----------------------------------------------------

    def oauth_token_info(self, request: Request, token: str) -> Response:
        expiry = self._tokens.get(token)
        if expiry is None or expiry <= self.clock():
            raise hs_error(404, "OBJECT_NOT_FOUND", "Token not found or expired")
        config = self.config
        grant = self._grants.get(self._issued_by.get(token, ""))
        body = {
            "token": token,
            "user": USER_EMAIL,
            "hub_domain": "sandbox.hubspot.local",
            "scopes": grant.scopes if grant else DEFAULT_SCOPES.split(),
            "hub_id": config["portal_id"],
            "app_id": config["app_id"],
            "expires_in": int(expiry - self.clock()),
            "user_id": config["ui_user_id"],
            "token_type": "access",
        }
        return json_response(body)

    def oauth_refresh_info(self, request: Request, token: str) -> Response:
        with self._tokens_lock:
            if not self._refresh_known(token):
                raise hs_error(404, "OBJECT_NOT_FOUND", "Refresh token not found")
            grant = self._grants.get(token)
        config = self.config
        body = {
            "token": token,
            "user": USER_EMAIL,
            "hub_domain": "sandbox.hubspot.local",
            "scopes": grant.scopes if grant else DEFAULT_SCOPES.split(),
            "hub_id": config["portal_id"],
            "client_id": config["client_id"],
            "user_id": config["ui_user_id"],
            "token_type": "refresh",
        }
        return json_response(body)

    def oauth_revoke(self, request: Request, token: str) -> Response:
        """Delete a refresh token: it and every access token it issued stop working at once."""
        with self._tokens_lock:
            if not self._refresh_known(token):
                raise hs_error(404, "OBJECT_NOT_FOUND", "Refresh token not found")
            self._revoked.add(token)
            self._grants.pop(token, None)
            for access in [a for a, refresh in self._issued_by.items() if refresh == token]:
                self._tokens.pop(access, None)
                del self._issued_by[access]
        return empty_response()

    def expire_access_tokens(self) -> int:
        """Make every issued access token stale now (refresh tokens stay valid)."""
        with self._tokens_lock:
            now = self.clock()
            stale = [token for token, expiry in self._tokens.items() if expiry > now]
            for token in stale:
                self._tokens[token] = now
            return len(stale)

    # -- account ----------------------------------------------------------------------------

    def account_details(self, request: Request) -> Response:
        portal_id = self.config["portal_id"]
        return json_response(
            {
                "portalId": portal_id,
                "accountType": "STANDARD",
                "timeZone": "US/Eastern",
                "companyCurrency": "USD",
                "additionalCurrencies": [],
                "utcOffset": "-05:00",
                "utcOffsetMilliseconds": -18_000_000,
                "uiDomain": "app.hubspot.com",
                "dataHostingLocation": "na1",
            }
        )
