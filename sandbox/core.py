"""Shared core of the CRM sandboxes: one WSGI app class every provider subclasses.

A provider module (``sandbox/hubspot.py``, ``sandbox/salesforce.py``) subclasses
:class:`SandboxApp` and:

* declares its config keys by extending :attr:`SandboxApp.CONFIG_FIELDS`
  (``{name: (default, coerce)}``; ``coerce`` validates and normalises a value,
  raising ``ValueError``);
* registers its API routes in :meth:`SandboxApp.setup_routes` with
  ``self.router.add(method, "/path/{param}", handler)``; a handler is called as
  ``handler(request, **params)`` and returns a werkzeug ``Response`` (use
  :func:`json_response` / :func:`empty_response`) or raises :class:`ApiError`;
* shapes errors in its own body format by overriding :meth:`SandboxApp.make_error`;
* authenticates and rate-limits in :meth:`SandboxApp.guard`, using
  ``self.rate_limiter`` / ``self.daily_quota`` (built from config);
* implements the control-plane hooks ``edit_record``, ``list_records``,
  ``count_records`` and ``reset_records``;
* emits webhook events with :meth:`SandboxApp.emit_events` and delivers batches in
  :meth:`SandboxApp.deliver_webhooks` (called by the background
  :class:`~sandbox.webhooks.WebhookDispatcher`).

Request pipeline for API routes: route match (404/405 through ``make_error``) →
latency → fault injection (429 storm / 500-503) → ``guard`` → handler → stats.
``/_sandbox/*`` control-plane routes skip everything but the handler and are not
counted.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from sandbox.config import (
    ConfigError,
    coerce_bool,
    coerce_fraction,
    coerce_non_negative,
    coerce_optional_int,
    coerce_optional_str,
    coerce_quota,
    coerce_rate_limit,
    coerce_str,
)
from sandbox.control import ControlPlane
from sandbox.limits import DailyQuota, LimitResult, RollingWindowLimiter
from sandbox.responses import ApiError, empty_response, json_response
from sandbox.routing import Route, Router
from sandbox.server import RunningSandbox, serve
from sandbox.webhooks import WebhookDispatcher, post_bytes

__all__ = [
    "ApiError",
    "ConfigError",
    "DailyQuota",
    "LimitResult",
    "RollingWindowLimiter",
    "Route",
    "Router",
    "RunningSandbox",
    "SandboxApp",
    "Store",
    "WebhookDispatcher",
    "coerce_bool",
    "coerce_fraction",
    "coerce_non_negative",
    "coerce_optional_int",
    "coerce_optional_str",
    "coerce_quota",
    "coerce_rate_limit",
    "coerce_str",
    "empty_response",
    "json_response",
    "post_bytes",
    "serve",
]

logger = logging.getLogger(__name__)

# --- in-memory store ----------------------------------------------------------


class Store:
    """A thread-safe in-memory table of records keyed by id.

    ``records`` may be read without the lock for a single lookup (dict reads are
    atomic under the GIL); take ``lock`` (re-entrant) around any
    read-modify-write or multi-record operation. ``next_seq()`` hands out
    increasing integers for ids. Providers keep their own secondary indexes
    (e.g. email → id) and update them under the same lock.
    """

    def __init__(self, first_seq: int = 1) -> None:
        self.lock = threading.RLock()
        self.records: dict[str, dict[str, Any]] = {}
        self._seq = first_seq

    def next_seq(self) -> int:
        with self.lock:
            seq = self._seq
            self._seq += 1
            return seq

    def clear(self) -> None:
        """Forget every record, not the sequence: a CRM never gives a deleted record's id to another
        (SyncRoot keeps links to ids across a sandbox reset)."""
        with self.lock:
            self.records.clear()


# --- the app --------------------------------------------------------------------


class SandboxApp(ControlPlane):
    """Base WSGI app of a CRM sandbox. See the module docstring for the contract."""

    #: Provider name ("hubspot", "salesforce"); used in logs and stats.
    KIND: ClassVar[str] = "sandbox"

    #: Config keys shared by every sandbox: ``{name: (default, coerce)}``.
    #: Webhook tuning keys are read live by the dispatcher.
    CONFIG_FIELDS: ClassVar[dict[str, tuple[Any, Callable[[Any], Any]]]] = {
        "webhook_url": (None, coerce_optional_str),
        "rate_limit": (None, coerce_rate_limit),
        "daily_quota": (None, coerce_quota),
        "latency_ms": (0.0, coerce_non_negative),
        "error_rate": (0.0, coerce_fraction),
        "rate_limit_storm": (0.0, coerce_fraction),
        "webhooks_enabled": (True, coerce_bool),
        "webhook_drop_rate": (0.0, coerce_fraction),
        "webhook_duplicate_rate": (0.0, coerce_fraction),
        "webhook_reorder": (False, coerce_bool),
        "webhook_batch_size": (100, coerce_optional_int),
        "webhook_linger_ms": (10.0, coerce_non_negative),
        "webhook_timeout_s": (5.0, coerce_non_negative),
        "webhook_max_retries": (10, coerce_optional_int),
        "webhook_retry_base_ms": (1000.0, coerce_non_negative),
        "webhook_retry_max_ms": (60_000.0, coerce_non_negative),
        # The CRMs' front ends refuse longer request targets (path and query) with 414, before any
        # API code runs: a read naming hundreds of properties in its query string meets it.
        "max_url_length": (8192, coerce_optional_int),
    }

    #: Concurrent webhook deliveries (HubSpot's documented limit is 10).
    WEBHOOK_CONCURRENCY: ClassVar[int] = 10

    def __init__(self, *, seed: int | None = None, **config: Any) -> None:
        """Build the app; ``config`` holds initial values of any ``CONFIG_FIELDS`` key.

        ``seed`` seeds the RNG used by fault injection and webhook faults, so a
        seeded run injects the same faults in the same order.
        """
        self.seed = seed
        self.rng = random.Random(seed)
        self.config: dict[str, Any] = {name: default for name, (default, _) in self.CONFIG_FIELDS.items()}
        self._config_lock = threading.Lock()
        self._apply_config(config)
        self._initial_config = dict(self.config)
        self.rate_limiter = RollingWindowLimiter.from_config(self.config["rate_limit"])
        self.daily_quota = DailyQuota(self.config["daily_quota"])
        self._stats_lock = threading.Lock()
        self._reset_stats()
        self.dispatcher = WebhookDispatcher(
            self.deliver_webhooks, config=self.config, rng=self.rng, concurrency=self.WEBHOOK_CONCURRENCY
        )
        self.router = Router()
        self.control = Router()
        self._setup_control_routes()
        self.setup_routes()

    # -- hooks for providers ---------------------------------------------------

    def setup_routes(self) -> None:
        """Register API routes on ``self.router`` (and extra ones on ``self.control``)."""

    def make_error(self, status: int, reason: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> ApiError:
        """Build a provider-shaped error. ``reason`` is one of the generic reasons
        ``NOT_FOUND``, ``METHOD_NOT_ALLOWED``, ``BAD_REQUEST``, ``RATE_LIMITED``,
        ``SERVER_ERROR``, ``UNAVAILABLE`` the core raises; providers map them to
        their own codes and body shape."""
        return ApiError(status, {"error": reason, "message": message}, headers)

    def guard(self, request: Request, route: Route) -> list[tuple[str, str]]:
        """Authenticate and rate-limit an API call before its handler runs.

        Raise :class:`ApiError` to refuse it; return headers to add to the
        handler's response (e.g. rate-limit headers). Default: allow everything.
        """
        return []

    def edit_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        """``POST /_sandbox/edit``: change a record as a person in the CRM UI would.

        ``payload`` is ``{"id"?, "fields": {...}, "delete"?: bool}``; return the
        record (provider JSON). Raise ``KeyError`` for an unknown id and
        ``ValueError`` for bad input (answered 404 / 400).
        """
        raise ValueError(f"{self.KIND} sandbox does not support UI edits")

    def list_records(self) -> list[dict[str, Any]]:
        """``GET /_sandbox/records``: every record, deleted ones flagged."""
        return []

    def count_records(self) -> int:
        """Number of live (not deleted) records, reported in stats."""
        return 0

    def reset_records(self) -> None:
        """Forget every record and provider-specific state (tokens stay valid)."""

    def config_changed(self, keys: set[str]) -> None:
        """Called after ``keys`` changed through config (provider-specific rebuilds)."""

    def deliver_webhooks(self, events: list[Any], attempt: int) -> bool:
        """POST one batch of events (``attempt`` counts from 0); True when acked (2xx)."""
        return False

    def extra_stats(self) -> dict[str, Any]:
        """Provider-specific additions to ``GET /_sandbox/stats``."""
        return {}

    # -- helpers for providers -------------------------------------------------

    def json_body(self, request: Request) -> Any:
        """The request's JSON body; a 400 in the provider's error shape otherwise."""
        data = request.get_data(cache=True)
        try:
            return json.loads(data) if data else None
        except ValueError as exc:
            raise self.make_error(400, "BAD_REQUEST", f"Invalid JSON input: {exc}") from None

    def emit_events(self, events: list[Any]) -> None:
        """Queue webhook events when a target URL is set and webhooks are enabled."""
        if events and self.config["webhook_url"] and self.config["webhooks_enabled"]:
            self.dispatcher.enqueue(events)

    def close(self) -> None:
        """Stop background webhook threads (pending deliveries are abandoned)."""
        self.dispatcher.stop()

    # -- config ----------------------------------------------------------------

    def update_config(self, changes: Mapping[str, Any]) -> dict[str, Any]:
        """Validate and apply ``changes``; all-or-nothing. Raises :class:`ConfigError`."""
        with self._config_lock:
            self._apply_config(changes)
            keys = set(changes)
            if "rate_limit" in keys:
                self.rate_limiter = RollingWindowLimiter.from_config(self.config["rate_limit"])
            if "daily_quota" in keys:
                self.daily_quota = DailyQuota(self.config["daily_quota"])
            self.config_changed(keys)
            return dict(self.config)

    def _apply_config(self, changes: Mapping[str, Any]) -> None:
        unknown = sorted(set(changes) - set(self.CONFIG_FIELDS))
        if unknown:
            raise ConfigError(f"unknown config keys: {', '.join(unknown)}")
        coerced = {}
        for name, value in changes.items():
            try:
                coerced[name] = self.CONFIG_FIELDS[name][1](value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"{name}: {exc}") from None
        self.config.update(coerced)

    # -- stats -----------------------------------------------------------------

    def _reset_stats(self) -> None:
        self._requests_total = 0
        self._rate_limited = 0
        self._faults = {"errors": 0, "storms": 0}
        self._requests: dict[str, dict[str, int]] = {}

    def _count(self, key: str, status: int) -> None:
        with self._stats_lock:
            self._requests_total += 1
            if status == 429:
                self._rate_limited += 1
            by_status = self._requests.get(key)
            if by_status is None:
                by_status = self._requests[key] = {}
            code = str(status)
            by_status[code] = by_status.get(code, 0) + 1

    def stats(self) -> dict[str, Any]:
        """The body of ``GET /_sandbox/stats``."""
        with self._stats_lock:
            body = {
                "requests_total": self._requests_total,
                "requests": {key: dict(value) for key, value in self._requests.items()},
                "rate_limited": self._rate_limited,
                "faults": dict(self._faults),
            }
        body["webhooks"] = self.dispatcher.stats()
        body["records"] = self.count_records()
        body.update(self.extra_stats())
        return body

    def reset(self, *, config: bool = False) -> None:
        """Clear records, stats, limiter counters and pending webhooks (and config if asked)."""
        self.dispatcher.clear()
        self.reset_records()
        with self._stats_lock:
            self._reset_stats()
        if config:
            with self._config_lock:
                self.config.update(self._initial_config)
                self.config_changed(set(self.config))
        self.rate_limiter = RollingWindowLimiter.from_config(self.config["rate_limit"])
        self.daily_quota = DailyQuota(self.config["daily_quota"])

    # -- WSGI ------------------------------------------------------------------

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        path = request.path
        if path.startswith("/_sandbox/"):
            response = self._dispatch_control(request)
        elif self._url_too_long(environ):
            response = Response("<html><body><h1>414 Request-URI Too Large</h1></body></html>", status=414,
                                content_type="text/html")  # fmt: skip
            self._count(f"{request.method} <too long>", 414)
        else:
            response = self._dispatch_api(request)
        return response(environ, start_response)

    def _url_too_long(self, environ: dict[str, Any]) -> bool:
        limit = self.config["max_url_length"]
        target = len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) + 1
        return bool(limit) and target > limit

    def _dispatch_api(self, request: Request) -> Response:
        method = request.method
        found = self.router.match(method, request.path)
        if isinstance(found, tuple):
            route, params = found
            key = route.key
            response = self._run_api(request, route, params)
        else:
            key = f"{method} <unmatched>"
            if found:
                error = self.make_error(405, "METHOD_NOT_ALLOWED", f"Method {method} not allowed")
                error.headers.append(("Allow", ", ".join(found)))
            else:
                error = self.make_error(404, "NOT_FOUND", f"No route for {method} {request.path}")
            response = error.to_response()
        self._count(key, response.status_code)
        return response

    def _run_api(self, request: Request, route: Route, params: dict[str, str]) -> Response:
        config = self.config
        try:
            if config["latency_ms"]:
                time.sleep(config["latency_ms"] / 1000.0)
            self._inject_faults(config)
            extra_headers = self.guard(request, route)
            response = route.handler(request, **params)
            for name, value in extra_headers:
                response.headers[name] = value
            return response
        except ApiError as error:
            return error.to_response()
        except Exception:
            logger.exception("%s sandbox handler failed: %s", self.KIND, route.key)
            return self.make_error(500, "SERVER_ERROR", "internal error").to_response()

    def _inject_faults(self, config: Mapping[str, Any]) -> None:
        storm, error_rate = config["rate_limit_storm"], config["error_rate"]
        if storm and self.rng.random() < storm:
            with self._stats_lock:
                self._faults["storms"] += 1
            raise self.make_error(429, "RATE_LIMITED", "rate limit storm", [("Retry-After", "1")])
        if error_rate and self.rng.random() < error_rate:
            with self._stats_lock:
                self._faults["errors"] += 1
            status = self.rng.choice((500, 503))
            reason = "SERVER_ERROR" if status == 500 else "UNAVAILABLE"
            raise self.make_error(status, reason, "injected fault")
