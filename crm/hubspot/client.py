"""HubSpot CRM v3 contacts over HTTP: auth, rate limiting, batching, and error classification.

Every answer is turned into our error classes here, once (`classify`); callers above this module
never look at HTTP statuses. Every request first takes a slot from the shared Redis limiter, so
all workers together stay under HubSpot's per-app budget.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urlencode

import requests
from limits import parse as parse_rate

from crm.base import AuthExpired, Permanent, ProviderError, RateLimited, Transient
from crm.budget import DayBudget
from crm.http import Budget, CallPath, CallRecord, Token, TokenCache, new_session
from crm.hubspot.transform import ID_PROPERTY, MODIFIED_PROPERTY, id_order, parse_time, to_epoch_ms
from crm.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

CONTACTS = "/crm/v3/objects/contacts"
RECORD_ROUTE = CONTACTS + "/{id}"  # what single-record calls report, without the id
TOKEN_PATH = "/oauth/v1/token"
AUTHORIZE_URL = "https://app.hubspot.com/oauth/authorize"  # the app host's install page, not the API's
BATCH_LIMIT = 100  # inputs per batch request
SEARCH_PAGE_LIMIT = 200  # results per search page
# Seconds to wait when a 429 names its window but carries no Retry-After (as HubSpot's Node SDK does).
POLICY_RETRY_AFTER = {"TEN_SECONDLY_ROLLING": 10.0, "SECONDLY": 1.0, "DAILY": 3600.0}
TOKEN_EARLY_REFRESH = 60.0  # refresh an OAuth token this long before it expires

# (operation, outcome) → calls, for metrics; outcome is "ok" or the error class in lower case.
CALLS: Counter[tuple[str, str]] = Counter()
_calls_lock = threading.Lock()


@dataclass
class BatchResult:
    """Objects a batch call returned, and HubSpot's per-input errors (207 answers)."""

    results: list[dict[str, Any]] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def extend(self, body: Mapping[str, Any] | None) -> None:
        if body:
            self.results.extend(body.get("results") or [])
            self.errors.extend(body.get("errors") or [])


def chunked(items: Sequence[Any], size: int = BATCH_LIMIT) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def classify(status: int, body: Any, headers: Mapping[str, str]) -> ProviderError:
    """Our error for a non-2xx HubSpot answer; `body` is the decoded JSON (anything else ignored)."""
    data = body if isinstance(body, dict) else {}
    message = str(data.get("message") or f"HubSpot answered HTTP {status}")
    category = str(data.get("category") or data.get("errorType") or "")
    if status == 429:
        policy = str(data.get("policyName") or "")
        retry_after = _seconds(headers.get("Retry-After"))
        if retry_after is None:
            retry_after = POLICY_RETRY_AFTER.get(policy, 10.0)
        return RateLimited(f"{message} ({policy or 'rate limit'})", retry_after=retry_after, status=429)
    if status == 423:  # HubSpot: "Locked" while it syncs a large volume; documented wait is 2 s
        return RateLimited(message, retry_after=_seconds(headers.get("Retry-After")) or 2.0, code="LOCKED", status=423)
    if status >= 500 or status == 408 or status < 400:
        return Transient(message, code=category or f"HTTP_{status}", status=status)
    if status == 401:
        return AuthExpired(message, code=category or "INVALID_AUTHENTICATION", status=status)
    code, detail = _validation_detail(message)
    if not code:
        inner = data.get("errors")
        if isinstance(inner, list) and inner and isinstance(inner[0], dict):
            code = str(inner[0].get("code") or "")
    return Permanent(detail or message, code=code or category or f"HTTP_{status}", status=status)


def classify_response(response: requests.Response, body: Any) -> ProviderError | None:
    """The CallPath's view of `classify`: None for a 2xx answer."""
    status = response.status_code
    return None if 200 <= status < 300 else classify(status, body, response.headers)


def classify_token_answer(response: requests.Response, body: Any) -> ProviderError | None:
    """A token endpoint answer without an access token is a refusal, unless HubSpot is down."""
    return _token_answer(response, body, refused="token refresh refused")


def classify_code_answer(response: requests.Response, body: Any) -> ProviderError | None:
    """The answer to an authorization code: both tokens, else a refusal (unless HubSpot is down)."""
    error = _token_answer(response, body, refused="authorization code refused")
    if error is None and not body.get("refresh_token"):
        return AuthExpired("authorization code refused: the answer holds no refresh token", code="NO_REFRESH_TOKEN")
    return error


def _token_answer(response: requests.Response, body: Any, *, refused: str) -> ProviderError | None:
    status = response.status_code
    if status == 200 and isinstance(body, dict) and body.get("access_token"):
        return None
    error = classify(status, body, response.headers)
    if isinstance(error, Permanent | AuthExpired) or status == 200:
        # A refused refresh token or code cannot fix itself: the app must be authorised again.
        # The token endpoint names its refusal in `status` (BAD_REFRESH_TOKEN, BAD_AUTH_CODE, ...).
        refusal = str(body.get("status") or "") if isinstance(body, dict) else ""
        code = refusal if refusal and refusal != "error" else error.code
        return AuthExpired(f"{refused}: {error.message}", code=code, status=status)
    return error


def classify_item_error(error: Mapping[str, Any]) -> ProviderError:
    """Our error for one entry of a 207 answer's `errors` list."""
    category = str(error.get("category") or "")
    message = str(error.get("message") or "HubSpot refused this record")
    if category in ("OBJECT_NOT_FOUND", "VALIDATION_ERROR", "CONFLICT", "INVALID_EMAIL") or category.startswith(
        "VALIDATION"
    ):
        code, detail = _validation_detail(message)
        status = 404 if category == "OBJECT_NOT_FOUND" else 409 if category == "CONFLICT" else 400
        return Permanent(detail or message, code=code or category, status=status)
    # Anything else (internal errors, timeouts inside HubSpot's batch) is worth another try.
    return Transient(message, code=category or "BATCH_ITEM_FAILED")


def _validation_detail(message: str) -> tuple[str, str]:
    """HubSpot nests per-property problems as JSON in the message: take the inner codes and texts."""
    start = message.find("[")
    if not message.startswith("Property values were not valid") or start < 0:
        return "", ""
    try:
        problems = json.loads(message[start:])
    except ValueError:
        return "", ""
    problems = [p for p in problems if isinstance(p, dict)] if isinstance(problems, list) else []
    if not problems:
        return "", ""
    code = str(problems[0].get("error") or "")
    detail = "; ".join(str(p.get("message") or p.get("error") or "") for p in problems)
    return code, detail


def with_headroom(rate: str) -> str:
    """HubSpot's limit less 5% (at least one request).

    Our window counts a request when it leaves, HubSpot's when it arrives: network jitter can
    put one more request in HubSpot's window than in ours, which at the exact limit is a 429.
    """
    item = parse_rate(rate)
    amount = item.amount - max(1, item.amount // 20) if item.amount > 1 else item.amount
    return f"{amount} per {item.multiples} {item.GRANULARITY.name}"


def _filter(prop: str, operator: str, value: int | str) -> dict[str, str]:
    return {"propertyName": prop, "operator": operator, "value": str(value)}


def _after_cursor(cursor_ms: int | None, cursor_id: str | None) -> list[dict[str, Any]]:
    """Filter groups (OR of ANDs) selecting records after the compound cursor."""
    if cursor_ms is None:
        return []
    if cursor_id is None:
        return [{"filters": [_filter(MODIFIED_PROPERTY, "GT", cursor_ms)]}]
    if cursor_id == "":
        return [{"filters": [_filter(MODIFIED_PROPERTY, "GTE", cursor_ms)]}]
    same_time = [
        _filter(MODIFIED_PROPERTY, "GTE", cursor_ms),
        _filter(MODIFIED_PROPERTY, "LTE", cursor_ms),
        _filter(ID_PROPERTY, "GT", cursor_id),
    ]
    return [{"filters": same_time}, {"filters": [_filter(MODIFIED_PROPERTY, "GT", cursor_ms)]}]


def _has_next(page: Mapping[str, Any]) -> bool:
    return bool(((page.get("paging") or {}).get("next") or {}).get("after"))


def _time_and_id(obj: Mapping[str, Any]) -> tuple[int, tuple[int, int | str]]:
    properties = obj.get("properties") or {}
    moment = parse_time(properties.get(MODIFIED_PROPERTY) or obj.get("updatedAt"))
    return (to_epoch_ms(moment) if moment else 0, id_order(str(obj["id"])))


def read_budget(headers: Mapping[str, str]) -> list[Budget]:
    """`X-HubSpot-RateLimit-Max/-Remaining` (the rolling window) and `-Daily/-Daily-Remaining`
    (private apps only); search answers carry none."""
    budgets = []
    for window, limit_name, remaining_name in (
        ("short", "X-HubSpot-RateLimit-Max", "X-HubSpot-RateLimit-Remaining"),
        ("day", "X-HubSpot-RateLimit-Daily", "X-HubSpot-RateLimit-Daily-Remaining"),
    ):
        limit, remaining = headers.get(limit_name), headers.get(remaining_name)
        if limit and remaining is not None:
            interval = headers.get("X-HubSpot-RateLimit-Interval-Milliseconds") if window == "short" else None
            budgets.append(
                Budget(window, max(int(limit) - int(remaining), 0), int(limit), int(interval) if interval else None)
            )
    return budgets


def _seconds(value: str | None) -> float | None:
    try:
        return max(float(value), 0.0) if value not in (None, "") else None
    except ValueError:
        return None  # an HTTP-date Retry-After: HubSpot does not send one; use the policy default


class HubSpotClient:
    """One pooled session, a lazily refreshed OAuth token (or a private-app token), the limiters."""

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        session: requests.Session | None = None,
        on_response: Callable[[CallRecord], None] | None = None,
    ) -> None:
        self.base_url = str(config.get("base_url") or "https://api.hubapi.com").rstrip("/")
        self._client_id = str(config.get("client_id") or "")
        self._client_secret = str(config.get("client_secret") or "")
        self._refresh_token = str(config.get("refresh_token") or "")
        key = str(config.get("limiter_key") or "hubspot")
        self.limiter = RateLimiter(key, with_headroom(str(config.get("rate_limit") or "100/10 seconds")))
        # Search's small per-second budget is paced, each call its own turn (see crm.ratelimit).
        search_rate = str(config.get("search_rate_limit") or "5/second")
        self.search_limiter = RateLimiter(f"{key}-search", search_rate, spaced=True)
        self.on_response = on_response or config.get("on_response")
        self.session = session or new_session(pool_connections=2, pool_maxsize=10)
        self.session.headers.update({"Accept": "application/json", "User-Agent": "SyncRoot (+hubspot-contacts)"})
        self.tokens = TokenCache(
            self._fetch_token,
            can_refresh=bool(self._client_id and self._client_secret and self._refresh_token),
            token=str(config.get("access_token") or ""),
            early_refresh=TOKEN_EARLY_REFRESH,
        )
        self.path = CallPath(
            name="hubspot",
            session=self.session,
            timeout=(float(config.get("connect_timeout", 3.0)), float(config.get("read_timeout", 15.0))),
            classify=classify_response,
            limiter=self.limiter,
            tokens=self.tokens,
            on_call=self._count,
            read_budget=read_budget,
            budget=DayBudget.from_config(config),
        )

    # --- single records ------------------------------------------------------------------------
    def create(self, properties: Mapping[str, str]) -> dict[str, Any]:
        return self.request("POST", CONTACTS, operation="create", body={"properties": dict(properties)})

    def probe(self) -> None:
        """The cheapest authenticated call: one contact of the first page (credential check)."""
        self.request("GET", CONTACTS, operation="probe", params={"limit": "1"})

    def account_id(self) -> str:
        """The portal these credentials reach: an OAuth token tells its `hub_id` when looked up
        (`GET /oauth/v1/access-tokens/{token}`); a private-app token answers `GET
        /account-info/v3/details` with its `portalId`."""
        token = self.tokens.current()
        if self.tokens.can_refresh:
            info = self.path.request(
                "GET", f"{self.base_url}/oauth/v1/access-tokens/{quote(token, safe='')}", operation="token_info",
                route="/oauth/v1/access-tokens/{token}", authorized=False,
            )  # fmt: skip
            return str((info or {}).get("hub_id") or "")
        details = self.request("GET", "/account-info/v3/details", operation="account_details")
        return str((details or {}).get("portalId") or "")

    def get(self, contact_id: str, *, properties: Iterable[str] = (), id_property: str | None = None) -> dict[str, Any]:
        params: dict[str, str] = {"archived": "false"}
        if properties:
            params["properties"] = ",".join(properties)
        if id_property:
            params["idProperty"] = id_property
        path = f"{CONTACTS}/{quote(str(contact_id), safe='')}"
        return self.request("GET", path, operation="get", route=RECORD_ROUTE, params=params)

    def get_by_email(self, email: str, *, properties: Iterable[str] = ()) -> dict[str, Any]:
        return self.get(email, properties=properties, id_property="email")

    def update(self, contact_id: str, properties: Mapping[str, str]) -> dict[str, Any]:
        path = f"{CONTACTS}/{quote(str(contact_id), safe='')}"
        body = {"properties": dict(properties)}
        return self.request("PATCH", path, operation="update", route=RECORD_ROUTE, body=body)

    def archive(self, contact_id: str) -> None:
        path = f"{CONTACTS}/{quote(str(contact_id), safe='')}"
        self.request("DELETE", path, operation="archive", route=RECORD_ROUTE)

    def merge(self, primary_id: str, merged_id: str) -> dict[str, Any]:
        """`POST …/contacts/merge`: the survivor (SimplePublicObject), whose id may be new."""
        body = {"primaryObjectId": str(primary_id), "objectIdToMerge": str(merged_id)}
        return self.request("POST", f"{CONTACTS}/merge", operation="merge", body=body)

    def iter_archived(self, *, properties: Iterable[str] = ()) -> Iterator[dict[str, Any]]:
        """Every archived contact (search never returns them), 100 per page."""
        params: dict[str, str] = {"archived": "true", "limit": str(BATCH_LIMIT)}
        if properties:
            params["properties"] = ",".join(properties)
        while True:
            page = self.request("GET", CONTACTS, operation="list_archived", params=params) or {}
            yield from page.get("results") or []
            after = ((page.get("paging") or {}).get("next") or {}).get("after")
            if not after:
                return
            params["after"] = str(after)

    # --- batches (any length; sent in chunks of 100, the first failing chunk raises) ------------
    def batch_create(self, inputs: Sequence[Mapping[str, str]]) -> BatchResult:
        """Create contacts; each input carries its index as objectWriteTraceId so a 207 maps back."""
        indexed = [{"properties": dict(props), "objectWriteTraceId": str(i)} for i, props in enumerate(inputs)]
        return self._batch("create", indexed)

    def batch_read(
        self, ids: Sequence[str], *, properties: Iterable[str] = (), id_property: str | None = None
    ) -> BatchResult:
        extra: dict[str, Any] = {"properties": list(properties), "propertiesWithHistory": []}
        if id_property:
            extra["idProperty"] = id_property
        return self._batch("read", [{"id": str(i)} for i in ids], extra=extra, params={"archived": "false"})

    def batch_update(self, inputs: Sequence[tuple[str, Mapping[str, str]]]) -> BatchResult:
        rows = [
            {"id": str(key), "properties": dict(props), "objectWriteTraceId": str(i)}
            for i, (key, props) in enumerate(inputs)
        ]
        return self._batch("update", rows)

    def batch_upsert(
        self, inputs: Sequence[tuple[str, Mapping[str, str]]], *, id_property: str = "email"
    ) -> BatchResult:
        """Match-or-create by a unique property in one call; results carry `new`."""
        rows = [
            {"id": key, "idProperty": id_property, "properties": dict(props), "objectWriteTraceId": str(i)}
            for i, (key, props) in enumerate(inputs)
        ]
        return self._batch("upsert", rows)

    def batch_archive(self, ids: Sequence[str]) -> BatchResult:
        """Archive by id; HubSpot answers 204 whether or not an id existed."""
        return self._batch("archive", [{"id": str(i)} for i in ids])

    def _batch(
        self,
        action: str,
        inputs: Sequence[dict[str, Any]],
        *,
        extra: Mapping[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> BatchResult:
        outcome = BatchResult()
        path, operation = f"{CONTACTS}/batch/{action}", f"batch_{action}"
        for chunk in chunked(inputs):
            body = {**(extra or {}), "inputs": list(chunk)}
            outcome.extend(self.request("POST", path, operation=operation, body=body, params=params))
        return outcome

    # --- search --------------------------------------------------------------------------------
    def search(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """One page of `POST /crm/v3/objects/contacts/search` (its own 5/s budget at HubSpot)."""
        return self.request("POST", f"{CONTACTS}/search", operation="search", body=dict(body), search=True)

    def iter_modified_since(
        self,
        *,
        since_ms: int | None,
        after_id: str = "",
        properties: Sequence[str] = (),
        page_size: int = SEARCH_PAGE_LIMIT,
    ) -> Iterator[dict[str, Any]]:
        """Contacts modified after the compound cursor `(since_ms, after_id)`, in (time, id) order.

        Pages by keyset (`lastmodifieddate` and id of the last record yielded) instead of `after`:
        offset paging stops at HubSpot's 10,000-result cap and skips a record whenever an earlier
        one is modified while paging, and a keyset re-query never reaches the cap. `since_ms` None
        reads from the beginning; an empty `after_id` includes every record at `since_ms`.
        """
        props = list(dict.fromkeys([*properties, MODIFIED_PROPERTY, ID_PROPERTY]))
        cursor_ms, cursor_id = since_ms, after_id or ""  # cursor_id None: past cursor_ms entirely
        while True:
            body = {
                "filterGroups": _after_cursor(cursor_ms, cursor_id),
                "sorts": [{"propertyName": MODIFIED_PROPERTY, "direction": "ASCENDING"}],
                "properties": props,
                "limit": page_size,
            }
            page = self.search(body)
            results = page.get("results") or []
            if not _has_next(page):
                yield from sorted(results, key=_time_and_id)
                return
            last_ms = _time_and_id(results[-1])[0]
            # Records at the page's last time may continue on the next page: re-read them then.
            done = sorted((r for r in results if _time_and_id(r)[0] < last_ms), key=_time_and_id)
            if done:
                yield from done
                cursor_ms, cursor_id = _time_and_id(done[-1])[0], str(done[-1]["id"])
                continue
            # A whole page shares one time (a bulk import): read that time alone, by id.
            start = cursor_id if cursor_ms == last_ms and cursor_id else ""
            yield from self._iter_at_time(last_ms, start, props, page_size)
            cursor_ms, cursor_id = last_ms, None

    def _iter_at_time(self, at_ms: int, after_id: str, props: list[str], page_size: int) -> Iterator[dict[str, Any]]:
        while True:
            filters = [_filter(MODIFIED_PROPERTY, "GTE", at_ms), _filter(MODIFIED_PROPERTY, "LTE", at_ms)]
            if after_id:
                filters.append(_filter(ID_PROPERTY, "GT", after_id))
            body = {
                "filterGroups": [{"filters": filters}],
                "sorts": [{"propertyName": ID_PROPERTY, "direction": "ASCENDING"}],
                "properties": props,
                "limit": page_size,
            }
            page = self.search(body)
            results = sorted(page.get("results") or [], key=_time_and_id)
            yield from results
            if not results or not _has_next(page):
                return
            after_id = str(results[-1]["id"])

    # --- transport -----------------------------------------------------------------------------
    def request(
        self,
        method: str,
        path: str,
        *,
        operation: str,
        route: str | None = None,
        body: Any = None,
        params: Mapping[str, str] | None = None,
        search: bool = False,
    ) -> Any:
        """Send one API call; the decoded JSON body (None when empty) or a classified ProviderError."""
        return self.path.request(
            method,
            self.base_url + path,
            operation=operation,
            route=route or path,
            limiter=self.search_limiter if search else None,
            json=body,
            params=params,
        )

    def _count(self, record: CallRecord) -> None:
        with _calls_lock:
            CALLS[(record.operation, record.outcome)] += 1
        for budget in record.budgets:
            if budget.window == "short" and budget.interval_ms and budget.interval_ms % 1000 == 0:
                # The portal's own window (its app's limit) when it is tighter than the configured one.
                self.limiter.fit(with_headroom(f"{budget.limit} per {budget.interval_ms / 1000:g} seconds"))
        if self.on_response is not None:
            self.on_response(record)

    # --- auth ----------------------------------------------------------------------------------
    def authorize_url(self, *, authorize_url: str, scopes: str, redirect_uri: str, state: str) -> str:
        """The app's install page for a person to approve it on one of their portals."""
        query = {"client_id": self._client_id, "redirect_uri": redirect_uri, "scope": scopes, "state": state}
        return f"{authorize_url or AUTHORIZE_URL}?{urlencode(query, quote_via=quote, safe='')}"

    def exchange_code(self, *, code: str, redirect_uri: str) -> dict[str, Any]:
        """`POST /oauth/v1/token` with grant `authorization_code`: the portal's refresh and access
        tokens. `redirect_uri` must be the one the code was issued for."""
        form = {
            "grant_type": "authorization_code",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "redirect_uri": redirect_uri,
            "code": code,
        }
        return self.path.request(
            "POST", self.base_url + TOKEN_PATH, operation="token_code", route=TOKEN_PATH, authorized=False,
            classify=classify_code_answer, data=form,
        )  # fmt: skip

    def _fetch_token(self) -> Token:
        """Exchange the refresh token for a new access token (TokenCache calls it once at a time)."""
        if not self.tokens.can_refresh:
            raise AuthExpired("no HubSpot access token or refresh credentials configured", code="NOT_CONFIGURED")
        form = {
            "grant_type": "refresh_token",
            "client_id": self._client_id,
            "client_secret": self._client_secret,
            "refresh_token": self._refresh_token,
        }
        data = self.path.request(
            "POST",
            self.base_url + TOKEN_PATH,
            operation="token",
            route=TOKEN_PATH,
            authorized=False,
            classify=classify_token_answer,
            data=form,
        )
        self._refresh_token = str(data.get("refresh_token") or self._refresh_token)
        return Token(str(data["access_token"]), _seconds(str(data.get("expires_in", ""))) or None)
