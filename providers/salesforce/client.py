"""The Salesforce REST API over one pooled `requests` session: OAuth, rate limit, errors.

Every HTTP call (token requests included) takes a slot from the shared Redis limiter and
every answer is turned into SyncRoot's error classes here, once (see errors.py).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from providers.base import AuthExpired, ProviderError, Transient
from providers.ratelimit import RateLimiter
from providers.salesforce.errors import error_from_response, first_error, parse_body, retry_after_seconds, transient

logger = logging.getLogger(__name__)

# Connect fast (a dead host should fail the task quickly), read generously (collections of
# 200 records and 2,000-row query pages take a few seconds on a busy org).
DEFAULT_TIMEOUT = (3.05, 20.0)
COLLECTION_SIZE = 200  # sObject Collections accept at most 200 records per call
USER_ID_RETRY_S = 600.0
_LIMIT_INFO = re.compile(r"(?:^|[^-])api-usage=(\d+)/(\d+)")
_ID_SEGMENT = re.compile(r"/[0-9A-Za-z]{15}(?:[0-9A-Za-z]{3})?(?=/|$)")
_QUERY_MORE = re.compile(r"^/services/data/v[\d.]+/(query|queryAll)/[^/]+$")


def route_of(path: str) -> str:
    """`path` without its query string, record ids or query locators."""
    path = path.split("?", 1)[0]
    more = _QUERY_MORE.match(path)
    if more:
        return f"{more.group(1)}/{{locator}}"
    return _ID_SEGMENT.sub("/{id}", path)


@dataclass(frozen=True)
class CallOutcome:
    """What one HTTP call to Salesforce did, for metrics and the audit trail."""

    method: str
    path: str  # ids and query locators replaced, e.g. "sobjects/Contact/{id}", for low-cardinality metrics
    status: int | None  # None when no answer came (timeout, connection error)
    seconds: float
    error: ProviderError | None


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
        on_response: Callable[[CallOutcome], None] | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
    ) -> None:
        self.config = dict(config)
        self.login_url = str(config.get("login_url") or "https://login.salesforce.com").rstrip("/")
        self.api_version = str(config.get("api_version") or "59.0").lstrip("vV")
        self.instance_url = str(config.get("instance_url") or "").rstrip("/")
        self.session = session or _new_session()
        self.limiter = limiter or RateLimiter(
            str(config.get("rate_limit_name") or "salesforce"), str(config.get("rate_limit") or "25/second")
        )
        self.on_response = on_response or config.get("on_response")
        self.timeout = timeout
        self.api_usage: tuple[int, int] | None = None  # (used, limit) from the last Sforce-Limit-Info
        self._access_token = str(config.get("access_token") or "") if self.instance_url else ""
        self._user_id = str(config.get("integration_user_id") or "")
        self._user_id_retry_at = 0.0
        self._auth_lock = threading.Lock()

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
        if not self.can_login:
            raise AuthExpired(
                "Salesforce session expired and no OAuth credentials are configured", code="NO_CREDENTIALS"
            )
        url = f"{self.login_url}/services/oauth2/token"
        response, error = self._call("POST", url, "/services/oauth2/token", data=self._token_form(), auth=False)
        if error is not None:
            raise error
        body = parse_body(response.content)
        if response.status_code != 200 or not isinstance(body, Mapping) or not body.get("access_token"):
            code, message, _ = first_error(body)
            status = response.status_code
            if status >= 500:  # an overloaded org names when to come back, as on any other call
                raise transient(
                    message or f"HTTP {status}", code=code or f"HTTP_{status}", status=status,
                    retry_after=retry_after_seconds(response.headers.get("Retry-After")),
                )  # fmt: skip
            # The org refused our credentials: retrying will not help until an operator fixes them.
            raise AuthExpired(message or "token request refused", code=code or "LOGIN_FAILED", status=status)
        self._access_token = str(body["access_token"])
        if body.get("instance_url"):
            self.instance_url = str(body["instance_url"]).rstrip("/")
        identity = str(body.get("id") or "")
        if identity and not self.config.get("integration_user_id"):
            self._user_id = identity.rstrip("/").rsplit("/", 1)[-1]
        logger.info("salesforce login ok", extra={"instance_url": self.instance_url})

    def _ensure_token(self) -> str:
        if not self._access_token:
            with self._auth_lock:
                if not self._access_token:
                    self.login()
        return self._access_token

    def _refresh(self, stale: str) -> None:
        with self._auth_lock:
            if self._access_token == stale:  # another thread may have refreshed already
                self._access_token = ""
                self.login()

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
            self._ensure_token()  # a login reads the user id from the token answer
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
    ) -> Any:
        """One REST call; the parsed JSON answer (None for 204). Raises a ProviderError."""
        for attempt in range(2):
            token = self._ensure_token()
            response, error = self._call(
                method, self.url_for(path), path, params=params, json=json, headers=headers, token=token
            )
            if error is None:
                return self._body(response)
            if isinstance(error, AuthExpired) and attempt == 0 and self.can_login:
                self._refresh(token)
                continue
            raise error
        raise AssertionError("unreachable")

    def _call(
        self, method: str, url: str, path: str, *, token: str = "", auth: bool = True, **kwargs: Any
    ) -> tuple[requests.Response, ProviderError | None]:
        headers = {"Accept": "application/json", **(kwargs.pop("headers", None) or {})}
        if auth:
            headers["Authorization"] = f"Bearer {token}"
        self.limiter.acquire()
        started = time.monotonic()
        try:
            response = self.session.request(method, url, headers=headers, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            code = "TIMEOUT" if isinstance(exc, requests.Timeout) else "CONNECTION_ERROR"
            error = transient(str(exc), code=code)
            self._report(method, path, None, started, error)
            raise error from exc
        self._read_limit_info(response)
        failure = None
        if response.status_code >= 300 and auth:
            failure = error_from_response(response.status_code, parse_body(response.content), response.headers)
        self._report(method, path, response.status_code, started, failure)
        return response, failure

    def _report(self, method: str, path: str, status: int | None, started: float, error: ProviderError | None) -> None:
        if self.on_response is None:
            return
        outcome = CallOutcome(method, route_of(path), status, time.monotonic() - started, error)
        try:
            self.on_response(outcome)
        except Exception:  # metrics must never break a sync
            logger.exception("salesforce on_response hook failed")

    def _read_limit_info(self, response: requests.Response) -> None:
        match = _LIMIT_INFO.search(response.headers.get("Sforce-Limit-Info", ""))
        if match:
            self.api_usage = (int(match.group(1)), int(match.group(2)))

    @staticmethod
    def _body(response: requests.Response) -> Any:
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError:
            raise Transient("Salesforce answered with a body that is not JSON", code="BAD_RESPONSE") from None

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


def _new_session() -> requests.Session:
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=16, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
