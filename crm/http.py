"""One HTTP call path for every CRM client: limiter → token → send → classify → count.

Each client configures a `CallPath` with its wire format (how to read the CRM's answers, how to
get a token) and sends through `request()`; the sequence, the locked single-flight token refresh
and the record each call leaves for metrics are written here once. Callers above the clients
never see an HTTP status: every failure leaves here as a `ProviderError`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from crm.base import AuthExpired, ProviderError, Transient
from crm.budget import SHORT_SHARES, DayBudget, Priority, current_priority
from crm.ratelimit import RateLimiter

logger = logging.getLogger(__name__)

# (response, decoded body) → the error this answer means, None when it is a success. The body is
# the decoded JSON, the first 500 characters of a body that is not JSON, or None when empty.
Classify = Callable[[requests.Response, Any], "ProviderError | None"]


@dataclass(frozen=True)
class Budget:
    """What a CRM's answer says of our API budget in one window: `used` of `limit` calls.

    `window` is "short" (HubSpot's rolling 10 s) or "day" (HubSpot's daily limit, Salesforce's
    rolling 24 h org quota). Each CRM reads its own headers into these (`CallPath.read_budget`).
    """

    window: str
    used: int
    limit: int
    interval_ms: int | None = None  # the short window's length, where the CRM says it


# The answer's headers → the budgets they report (none when the CRM sent no such header).
ReadBudget = Callable[[Mapping[str, str]], "list[Budget]"]


@dataclass(frozen=True)
class CallRecord:
    """One HTTP call to a CRM, the same for every CRM: what metrics and audits see."""

    operation: str  # the client's low-cardinality label, e.g. "create" or "GET sobjects/Contact/{id}"
    method: str
    route: str  # the path without record ids, query strings or locators
    status: int | None  # None when no answer came (timeout, connection error)
    seconds: float
    outcome: str  # "ok", "auth_refresh" (a 401 followed by one token refresh) or the error class, lower case
    error: ProviderError | None = None
    budgets: tuple[Budget, ...] = ()  # what the answer's rate-limit headers said


@dataclass(frozen=True)
class Token:
    value: str
    expires_in: float | None = None  # seconds; None when the CRM does not say (used until refused)


class TokenCache:
    """The access token, fetched again under a lock when it expires or is refused.

    Single flight: however many threads find the same token stale, one fetch happens; the others
    wait for the lock and take the token it brought.
    """

    def __init__(
        self,
        fetch: Callable[[], Token],
        *,
        can_refresh: bool,
        token: str = "",
        early_refresh: float = 0.0,
    ) -> None:
        self._fetch = fetch
        self.can_refresh = can_refresh  # False: a configured token, used as is until the CRM refuses it
        self._token = token
        self._expires_at: float | None = None  # unknown for a configured token
        self._early_refresh = early_refresh
        self._lock = threading.Lock()

    @property
    def value(self) -> str:
        return self._token

    def current(self) -> str:
        token, expires_at = self._token, self._expires_at
        if token and (expires_at is None or time.time() < expires_at - self._early_refresh):
            return token
        if token and not self.can_refresh:
            return token
        return self.refresh(token)

    def refresh(self, stale: str) -> str:
        """A token other than `stale`: fetched now, unless another thread already did."""
        with self._lock:
            if self._token and self._token != stale:
                return self._token
            # Forget the refused token first: if the fetch fails, the next call fetches again
            # instead of sending a token the CRM already refused.
            self._token, self._expires_at = "", None
            fresh = self._fetch()
            self._token = fresh.value
            self._expires_at = time.time() + fresh.expires_in if fresh.expires_in else None
            return fresh.value


class CallPath:
    """Sends one client's API calls: limiter slot, bearer token, timeouts, classification, record.

    Thread safe: a requests session may be shared by threads (its adapter pools connections),
    the token refresh is locked, and nothing else is kept between calls.
    """

    def __init__(
        self,
        *,
        name: str,
        session: requests.Session,
        timeout: tuple[float, float],
        classify: Classify,
        limiter: RateLimiter,
        tokens: TokenCache | None = None,
        on_call: Callable[[CallRecord], None] | None = None,
        read_budget: ReadBudget | None = None,
        budget: DayBudget | None = None,
    ) -> None:
        self.name = name
        self.budget = budget
        self.read_budget = read_budget
        self.session = session
        self.timeout = timeout
        self.classify = classify
        self.limiter = limiter
        self.tokens = tokens
        self.on_call = on_call

    def request(
        self,
        method: str,
        url: str | Callable[[], str],
        *,
        operation: str,
        route: str,
        limiter: RateLimiter | None = None,
        authorized: bool = True,
        classify: Classify | None = None,
        headers: Mapping[str, str] | None = None,
        raw: bool = False,
        decode: Callable[[bytes], Any] | None = None,
        **kwargs: Any,
    ) -> Any:
        """Send one call; the decoded JSON body (None when empty) or a classified ProviderError.

        `decode`: another format's decoder (SOAP's XML) instead of JSON's.
        `raw`: a successful answer is returned as the `requests.Response` itself (CSV and other
        bodies that are not JSON); failures are classified as for any other call.

        `url` may be a callable, resolved after the token: a login can move the API's host.
        A 401 (an AuthExpired from `classify`) refreshes the token once and sends again; a token
        refused right after refreshing is a real auth failure.
        """
        check = classify or self.classify
        tokens = self.tokens if authorized else None
        refreshed = False
        while True:
            token = tokens.current() if tokens is not None else ""
            target = url() if callable(url) else url
            self._take_slot(limiter or self.limiter, counted=authorized)
            sent = {**(headers or {}), **({"Authorization": f"Bearer {token}"} if tokens is not None else {})}
            started = time.monotonic()
            response = self._send(method, target, operation, route, started, headers=sent, **kwargs)
            body, error = self._answer(response, check, raw=raw, decode=decode)
            retry = isinstance(error, AuthExpired) and tokens is not None and tokens.can_refresh and not refreshed
            outcome = "auth_refresh" if retry else _outcome(error)
            budgets = self._budgets(response)
            self._record(operation, method, route, response.status_code, started, outcome, error, budgets)
            if retry and tokens is not None:
                tokens.refresh(token)
                refreshed = True
                continue
            if error is not None:
                logger.info(
                    "%s %s answered %s",
                    self.name,
                    operation,
                    response.status_code,
                    extra={"provider": self.name, "code": error.code, "status": response.status_code},
                )
                raise error
            return body

    def _take_slot(self, limiter: RateLimiter, *, counted: bool) -> None:
        """The day's budget first (a call past its priority's ceiling is not sent), then the short
        window: while live changes are flowing, a lower priority takes a slot of its smaller share
        before the shared one; alone, it may use the whole window."""
        priority = current_priority()
        if self.budget is not None and counted:  # token requests do not count against API limits
            self.budget.take(priority)
        if priority == Priority.LIVE:
            limiter.note_live()
        elif limiter.live_recently():  # live changes are flowing: keep to this priority's share
            limiter.share(SHORT_SHARES[priority]).acquire()
        limiter.acquire()

    def _send(
        self, method: str, url: str, operation: str, route: str, started: float, **kwargs: Any
    ) -> requests.Response:
        try:
            return self.session.request(method, url, timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            # The route, not the URL: a URL can carry a query with personal data (SOQL, emails).
            if isinstance(exc, requests.Timeout):
                error = Transient(f"{method} {route} timed out: {exc.__class__.__name__}", code="TIMEOUT")
            else:
                error = Transient(f"{method} {route} failed: {exc.__class__.__name__}", code="CONNECTION_ERROR")
            error.retry_after = None  # type: ignore[attr-defined]  # read with getattr, as RateLimited's
            self._record(operation, method, route, None, started, _outcome(error), error)
            raise error from exc

    def _budgets(self, response: requests.Response) -> tuple[Budget, ...]:
        if self.read_budget is None:
            return ()
        try:
            return tuple(self.read_budget(response.headers))
        except ValueError:  # a malformed header is no reason to fail the call
            logger.warning("%s sent an unreadable rate-limit header", self.name)
            return ()

    def _answer(
        self,
        response: requests.Response,
        classify: Classify,
        *,
        raw: bool = False,
        decode: Callable[[bytes], Any] | None = None,
    ) -> tuple[Any, ProviderError | None]:
        body: Any = None
        decoded = True
        if raw and response.status_code < 300:
            error = classify(response, None)
            return (response if error is None else None), error
        if response.content:
            try:
                body = decode(response.content) if decode is not None else response.json()
            except ValueError:
                body, decoded = response.content[:500].decode("utf-8", "replace"), False
        error = classify(response, body)
        if error is None and not decoded:
            status = response.status_code
            error = Transient(f"{self.name} sent a non-JSON {status} answer", code="BAD_RESPONSE", status=status)
        return body, error

    def _record(
        self,
        operation: str,
        method: str,
        route: str,
        status: int | None,
        started: float,
        outcome: str,
        error: ProviderError | None,
        budgets: tuple[Budget, ...] = (),
    ) -> None:
        if self.on_call is None:
            return
        record = CallRecord(operation, method, route, status, time.monotonic() - started, outcome, error, budgets)
        try:
            self.on_call(record)
        except Exception:  # metrics must never break a sync
            logger.exception("%s on_call hook failed", self.name)


def _outcome(error: ProviderError | None) -> str:
    return "ok" if error is None else type(error).__name__.lower()


def new_session(*, pool_connections: int, pool_maxsize: int) -> requests.Session:
    """A pooled session that never retries on its own: retries are ours to decide (classified
    errors, the shared budget), never urllib3's."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=pool_connections, pool_maxsize=pool_maxsize, max_retries=0)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
