"""The Salesforce REST API over one pooled `requests` session: OAuth, rate limit, errors.

Every HTTP call (token requests included) takes a slot from the shared Redis limiter and
every answer is turned into SyncRoot's error classes here, once (see errors.py).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import urlencode

import requests

from crm.base import AuthExpired, ProviderError, Transient
from crm.budget import DayBudget
from crm.http import Budget, CallPath, CallRecord, Token, TokenCache, new_session
from crm.ratelimit import RateLimiter
from crm.salesforce.errors import error_from_response, first_error, retry_after_seconds, transient

logger = logging.getLogger(__name__)

# Connect fast (a dead host should fail the task quickly), read generously (collections of
# 200 records and 2,000-row query pages take a few seconds on a busy org).
DEFAULT_TIMEOUT = (3.05, 20.0)
TOKEN_PATH = "/services/oauth2/token"
AUTHORIZE_PATH = "/services/oauth2/authorize"
COLLECTION_SIZE = 200  # sObject Collections accept at most 200 records per call
USER_ID_RETRY_S = 600.0
_LIMIT_INFO = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")
_ID_SEGMENT = re.compile(r"/[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?(?=/|$)")
_QUERY_MORE = re.compile(r"^/services/data/v[\d.]+/(query|queryAll)/[^/]+$")


def read_budget(headers: Mapping[str, str]) -> list[Budget]:
    """`Sforce-Limit-Info: api-usage=N/M`: the org's rolling 24-hour quota."""
    match = _LIMIT_INFO.search(headers.get("Sforce-Limit-Info", ""))
    return [Budget("day", int(match.group(1)), int(match.group(2)))] if match else []


def route_of(path: str) -> str:
    """`path` without its query string, record ids or query locators."""
    path = path.split("?", 1)[0]
    more = _QUERY_MORE.match(path)
    if more:
        return f"{more.group(1)}/{{locator}}"
    return _ID_SEGMENT.sub("/{id}", path)


class SalesforceClient:
    """Authenticated REST calls against one org.

    Auth, in order of preference: a static `access_token` + `instance_url` from the config
    is used as is; otherwise (and when it expires) a token is requested with the
    refresh_token grant, then the password grant, then client_credentials, depending on
    which credentials are set.
    """

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        session: requests.Session | None = None,
        limiter: RateLimiter | None = None,
        on_response: Callable[[CallRecord], None] | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.config = dict(config)
        self.login_url = str(config.get("login_url") or "https://login.salesforce.com").rstrip("/")
        self.api_version = str(config.get("api_version") or "59.0").lstrip("vV")
        self.instance_url = str(config.get("instance_url") or "").rstrip("/")
        self.session = session or new_session(pool_connections=4, pool_maxsize=16)
        self.limiter = limiter or RateLimiter(
            str(config.get("rate_limit_name") or "salesforce"), str(config.get("rate_limit") or "25/second")
        )
        self.on_response = on_response or config.get("on_response")
        self.timeout = timeout
        self.api_usage: tuple[int, int] | None = None  # (used, limit) from the last Sforce-Limit-Info
        self._user_id = str(config.get("integration_user_id") or "")
        self.organization_id = ""  # learnt from the token answer's identity URL
        self._user_id_retry_at = 0.0
        self.tokens = TokenCache(
            self._fetch_token,
            can_refresh=self.can_login,
            token=str(config.get("access_token") or "") if self.instance_url else "",
        )
        self.path = CallPath(
            name="salesforce",
            session=self.session,
            timeout=timeout,
            classify=self._classify,
            limiter=self.limiter,
            tokens=self.tokens,
            on_call=self.on_response,
            read_budget=read_budget,
            budget=DayBudget.from_config(config),
        )

    # --- auth ----------------------------------------------------------------------------
    @property
    def can_login(self) -> bool:
        config = self.config
        if not config.get("client_id"):
            return False
        return bool(
            config.get("refresh_token")
            or (config.get("username") and config.get("password"))
            or config.get("client_secret")
        )

    def _token_form(self) -> dict[str, str]:
        config = self.config
        form = {"client_id": str(config["client_id"])}
        if config.get("client_secret"):
            form["client_secret"] = str(config["client_secret"])
        if config.get("refresh_token"):
            form.update(grant_type="refresh_token", refresh_token=str(config["refresh_token"]))
        elif config.get("username") and config.get("password"):
            form.update(grant_type="password", username=str(config["username"]), password=str(config["password"]))
        else:
            form["grant_type"] = "client_credentials"
        return form

    def login(self) -> None:
        """Get a fresh access token (and the instance URL and user id) from the token endpoint."""
        self.tokens.refresh(self.tokens.value)

    def _fetch_token(self) -> Token:
        """The token endpoint's answer (TokenCache calls it once at a time); notes instance and user."""
        if not self.can_login:
            raise AuthExpired(
                "Salesforce session expired and no OAuth credentials are configured", code="NO_CREDENTIALS"
            )
        body = self.path.request(
            "POST",
            f"{self.login_url}{TOKEN_PATH}",
            operation=f"POST {TOKEN_PATH}",
            route=TOKEN_PATH,
            authorized=False,
            classify=self._classify_token_answer,
            headers={"Accept": "application/json"},
            data=self._token_form(),
        )
        if body.get("instance_url"):
            self.instance_url = str(body["instance_url"]).rstrip("/")
        # The identity URL names the org and the user: https://login.salesforce.com/id/<org>/<user>
        identity = str(body.get("id") or "").rstrip("/").split("/")
        if identity[-3:-2] == ["id"]:
            self.organization_id = identity[-2]
        if identity[-1] and not self.config.get("integration_user_id"):
            self._user_id = identity[-1]
        logger.info("salesforce login ok", extra={"instance_url": self.instance_url})
        return Token(str(body["access_token"]))

    def authorize_url(self, *, scopes: str, redirect_uri: str, state: str, code_challenge: str) -> str:
        """The web-server flow's "Allow Access?" page, with a PKCE challenge (S256)."""
        query = {
            "response_type": "code",
            "client_id": str(self.config.get("client_id") or ""),
            "redirect_uri": redirect_uri,
            "state": state,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        if scopes:
            query["scope"] = scopes
        return f"{self.login_url}{AUTHORIZE_PATH}?{urlencode(query)}"

    def exchange_code(self, *, code: str, redirect_uri: str, code_verifier: str) -> dict[str, Any]:
        """The token endpoint's `authorization_code` grant: the org's tokens, `instance_url` and
        identity URL (`id`). The code works once, for its redirect URI and PKCE verifier."""
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": code_verifier,
            "client_id": str(self.config.get("client_id") or ""),
        }
        if self.config.get("client_secret"):
            form["client_secret"] = str(self.config["client_secret"])
        body = self.path.request(
            "POST", f"{self.login_url}{TOKEN_PATH}", operation=f"POST {TOKEN_PATH}", route=TOKEN_PATH,
            authorized=False, classify=self._classify_token_answer, headers={"Accept": "application/json"}, data=form,
        )  # fmt: skip
        if not body.get("refresh_token"):
            raise AuthExpired(
                "the authorization gave no refresh token: the connected app's OAuth scopes need refresh_token",
                code="NO_REFRESH_TOKEN",
            )
        return body

    def _classify_token_answer(self, response: requests.Response, body: Any) -> ProviderError | None:
        self._read_limit_info(response)
        status = response.status_code
        if status == 200 and isinstance(body, Mapping) and body.get("access_token"):
            return None
        code, message, _ = first_error(body)
        if status >= 500:  # an overloaded org names when to come back, as on any other call
            return transient(
                message or f"HTTP {status}", code=code or f"HTTP_{status}", status=status,
                retry_after=retry_after_seconds(response.headers.get("Retry-After")),
            )  # fmt: skip
        # The org refused our credentials: retrying will not help until an operator fixes them.
        return AuthExpired(message or "token request refused", code=code or "LOGIN_FAILED", status=status)

    def account_id(self) -> str:
        """The org these credentials reach: from the token answer's identity URL, else (a static
        token) from `/services/oauth2/userinfo`."""
        self.tokens.current()
        if not self.organization_id:
            info = self.request("GET", "/services/oauth2/userinfo")
            if isinstance(info, Mapping):
                self.organization_id = str(info.get("organization_id") or "")
        return self.organization_id

    @property
    def integration_user_id(self) -> str:
        """The user our API calls run as (their records show it in LastModifiedById); "" if unknown.

        Known from config, else from the token answer's identity URL, else asked once per
        USER_ID_RETRY_S from /services/oauth2/userinfo (a static token tells nothing itself).
        """
        if self._user_id or time.monotonic() < self._user_id_retry_at:
            return self._user_id
        self._user_id_retry_at = time.monotonic() + USER_ID_RETRY_S
        try:
            self.tokens.current()  # a login reads the user id from the token answer
            if not self._user_id:
                info = self.request("GET", "/services/oauth2/userinfo")
                if isinstance(info, Mapping):
                    self._user_id = str(info.get("user_id") or "")
        except ProviderError as exc:
            logger.warning("salesforce integration user unknown", extra={"error": str(exc)})
        return self._user_id

    # --- calls ---------------------------------------------------------------------------
    @property
    def data_path(self) -> str:
        return f"/services/data/v{self.api_version}/"

    def url_for(self, path: str) -> str:
        """Absolute URL: a path starting with "/" is instance-relative (e.g. nextRecordsUrl)."""
        return self.instance_url + (path if path.startswith("/") else self.data_path + path)

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json: Any = None,
        headers: Mapping[str, str] | None = None,
        data: bytes | None = None,
        raw: bool = False,
    ) -> Any:
        """One REST call; the parsed JSON answer (None for 204), or with `raw` the response itself
        (Bulk API CSV). Raises a ProviderError."""
        route = route_of(path)
        return self.path.request(
            method,
            lambda: self.url_for(path),  # after the token: a login tells the instance URL
            operation=f"{method} {route}",
            route=route,
            params=params,
            json=json,
            data=data,
            raw=raw,
            headers={"Accept": "application/json", **(headers or {})},
        )

    def _classify(self, response: requests.Response, body: Any) -> ProviderError | None:
        """Every answer reports the org's API usage; a non-2xx one is an error (see errors.py)."""
        self._read_limit_info(response)
        if response.status_code < 300:
            return None
        return error_from_response(response.status_code, body, response.headers)

    def _read_limit_info(self, response: requests.Response) -> None:
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.api_usage = (int(match.group(1)), int(match.group(2)))

    # --- query ---------------------------------------------------------------------------
    def query_pages(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """Every page of a SOQL query (queryAll also returns deleted rows), following nextRecordsUrl."""
        page = self.request("GET", "queryAll" if include_deleted else "query", params={"q": soql})
        while True:
            if not isinstance(page, Mapping):
                raise Transient("unexpected query answer", code="BAD_RESPONSE")
            yield dict(page)
            next_url = page.get("nextRecordsUrl")
            if page.get("done", True) or not next_url:
                return
            page = self.request("GET", str(next_url))

    def query(self, soql: str, *, include_deleted: bool = False) -> Iterator[dict[str, Any]]:
        """The records of a SOQL query, page after page."""
        for page in self.query_pages(soql, include_deleted=include_deleted):
            yield from page.get("records") or ()

    # --- sObject Collections (per-record results, in request order) ------------------------
    def collection_create(self, sobject: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        body = {"allOrNone": False, "records": [{"attributes": {"type": sobject}, **record} for record in records]}
        return self._results(self.request("POST", "composite/sobjects", json=body), len(records))

    def collection_update(self, sobject: str, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """`records` carry their `id`."""
        body = {"allOrNone": False, "records": [{"attributes": {"type": sobject}, **record} for record in records]}
        return self._results(self.request("PATCH", "composite/sobjects", json=body), len(records))

    def collection_delete(self, ids: list[str]) -> list[dict[str, Any]]:
        answer = self.request("DELETE", "composite/sobjects", params={"ids": ",".join(ids), "allOrNone": "false"})
        return self._results(answer, len(ids))

    @staticmethod
    def _results(answer: Any, expected: int) -> list[dict[str, Any]]:
        if not isinstance(answer, list) or len(answer) != expected:
            # Results map back by position; a short or odd answer cannot be trusted per record.
            raise Transient(
                f"collections answer has {len(answer) if isinstance(answer, list) else 'no'} results "
                f"for {expected} records",
                code="BAD_RESPONSE",
            )
        return [dict(item) if isinstance(item, Mapping) else {"success": False, "errors": []} for item in answer]
