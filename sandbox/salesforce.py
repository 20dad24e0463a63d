"""Salesforce sandbox: REST sObjects, Collections, SOQL, OAuth/SOAP login, Outbound Messages.

A local emulator of one Salesforce org with Contact and Account, faithful on the
wire to what simple-salesforce 1.12 and plain REST clients see (see
``/work/shared/wire/salesforce.md`` and the README of :mod:`sandbox`). API writes
are made by the integration user :data:`INTEGRATION_USER_ID`; simulated UI edits
(``POST /_sandbox/edit``) by :data:`UI_USER_ID`.
"""

from __future__ import annotations

import argparse
import logging
import random
import re
import threading
from collections.abc import Callable, Mapping
from typing import Any

from werkzeug.wrappers import Request, Response
from werkzeug.wsgi import get_host

from sandbox.core import (
    ApiError,
    SandboxApp,
    coerce_bool,
    coerce_non_negative,
    coerce_optional_str,
    coerce_str,
    json_response,
)
from sandbox.routing import Route
from sandbox.salesforce_auth import (
    AuthMixin,
    SessionRegistry,
)
from sandbox.salesforce_bulk import BulkMixin
from sandbox.salesforce_describe import DescribeMixin
from sandbox.salesforce_oauth import WebServerFlow
from sandbox.salesforce_outbound import (
    OUTBOUND_FIELDS,
    ChannelDispatcher,
    build_change_event,
    build_notifications,
    encode_change_events,
    parse_ack,
    post,
)
from sandbox.salesforce_query import QueryMixin
from sandbox.salesforce_rest import RestMixin
from sandbox.salesforce_schema import (
    AUTOMATION_USER_ID,
    CONTACT,
    INTEGRATION_USER_ID,
    UI_USER_ID,
    make_id,
    normalize_id,
)
from sandbox.salesforce_store import Change, OrgStore, RecordError
from sandbox.salesforce_ui import edit as ui_edit
from sandbox.salesforce_ui import render

logger = logging.getLogger(__name__)
__all__ = ["DEFAULT_PORT", "INTEGRATION_USER_ID", "UI_USER_ID", "SalesforceApp", "add_arguments", "create_app"]

DEFAULT_PORT = 8101
API_VERSION = "59.0"
DEFAULT_ORGANIZATION_ID = "00D000000000001EAA"
#: What ``DailyApiRequests``/``api-usage`` report as the maximum when the quota is off.
UNLIMITED_QUOTA_REPORTED = 5_000_000

_VERSION_RE = re.compile(r"^v(\d{2})\.0$")
_CHANGE_EVENT_MODES = ("deletes", "all", "none")
_DUPLICATE_RULES = ("off", "block", "alert")


def _coerce_org_id(value: Any) -> str:
    org_id = normalize_id(value)
    if org_id is None or not org_id.startswith("00D"):
        raise ValueError("expected a 15/18-character organization id starting with 00D")
    return org_id


def _coerce_mode(value: Any) -> str:
    if value not in _CHANGE_EVENT_MODES:
        raise ValueError(f"expected one of {', '.join(_CHANGE_EVENT_MODES)}")
    return value


def _coerce_duplicate_rule(value: Any) -> str:
    if value not in _DUPLICATE_RULES:
        raise ValueError(f"expected one of {', '.join(_DUPLICATE_RULES)}")
    return value


def _coerce_fields(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError("expected a non-empty list of Contact field names")
    names = []
    for name in value:
        spec = CONTACT.field(name) if isinstance(name, str) else None
        if spec is None and isinstance(name, str) and name.endswith("__c"):
            names.append(name)  # a custom field, maybe added later (absent fields are left out)
            continue
        if spec is None:
            raise ValueError(f"no Contact field {name!r}")
        names.append(spec.name)
    return tuple(["Id"] + sorted(set(names) - {"Id"}))


def _coerce_urls(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(url, str) for url in value):
        raise ValueError("expected a list of URLs")
    return tuple(value)


def _coerce_rules(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, (list, tuple)) or not all(
        isinstance(rule, Mapping) and isinstance(rule.get("field"), str) and "value" in rule for rule in value
    ):
        raise ValueError("expected a list of {field, value} rules")
    return tuple({"field": rule["field"], "value": str(rule["value"])} for rule in value)


def _coerce_positive_int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError("expected a positive integer")
    return value


class SalesforceApp(AuthMixin, WebServerFlow, BulkMixin, DescribeMixin, RestMixin, QueryMixin, SandboxApp):
    """One emulated org. Config keys: see :attr:`CONFIG_FIELDS`."""

    KIND = "salesforce"
    WEBHOOK_CONCURRENCY = 4
    CONFIG_FIELDS = {
        **SandboxApp.CONFIG_FIELDS,
        "daily_quota": (100_000, SandboxApp.CONFIG_FIELDS["daily_quota"][1]),
        # Outbound Messages are retried "fast in the sandbox": 0.5 s doubling, capped at 10 s.
        "webhook_retry_base_ms": (500.0, coerce_non_negative),
        "webhook_retry_max_ms": (10_000.0, coerce_non_negative),
        "webhook_max_retries": (1000, SandboxApp.CONFIG_FIELDS["webhook_max_retries"][1]),
        # The REST API answers 414 past 16,384 characters of URI (a GET query's SOQL counts).
        "max_url_length": (16_384, SandboxApp.CONFIG_FIELDS["max_url_length"][1]),
        "token": ("sandbox-token", coerce_str),
        "client_id": ("sandbox-client", coerce_str),
        "client_secret": ("sandbox-secret", coerce_str),
        "token_ttl_s": (7200.0, coerce_non_negative),
        "organization_id": (DEFAULT_ORGANIZATION_ID, _coerce_org_id),
        "instance_url": (None, coerce_optional_str),
        "callback_urls": ((), _coerce_urls),  # the connected app's callback URLs; empty = any http(s) URL
        "outbound_messages": (True, coerce_bool),
        "outbound_fields": (OUTBOUND_FIELDS, _coerce_fields),
        "change_events_enabled": (True, coerce_bool),
        "change_events": ("deletes", _coerce_mode),
        "change_event_secret": ("sandbox-secret", coerce_str),
        "query_batch_size": (2000, _coerce_positive_int),
        "duplicate_rule": ("off", _coerce_duplicate_rule),
        # Record-triggered flows "on update of field X, set X to V": [{"field": X, "value": V}, ...],
        # run by the org's automated process user (a user other than the integration's).
        "workflow_rules": ((), _coerce_rules),
        "workflow_delay_ms": (50.0, coerce_non_negative),
    }

    def __init__(self, *, seed: int | None = None, **config: Any) -> None:
        # A random pod per run keeps ids unique across restarts (a seed makes them repeatable).
        pod_rng = random.Random(seed) if seed is not None else random.SystemRandom()
        pod = "".join(pod_rng.choice("0123456789abcdefghijklmnopqrstuvwxyz") for _ in range(2))
        self.store = OrgStore(pod=pod, on_commit=self._on_commit)
        self.cursors: dict[str, Any] = {}
        self._base_url = f"http://127.0.0.1:{DEFAULT_PORT}"
        super().__init__(seed=seed, **config)
        self.sessions = SessionRegistry(self.config["organization_id"])
        self.store.duplicate_rule = self.config["duplicate_rule"]
        self.action_id = make_id("04k", 1, pod)
        self.dispatcher.stop()
        self.dispatcher = ChannelDispatcher(
            {"outbound": self._send_outbound_messages, "events": self._send_change_events},
            config=self.config,
            rng=self.rng,
            concurrency=self.WEBHOOK_CONCURRENCY,
        )

    # -- routes ------------------------------------------------------------------

    def api(self, method: str, pattern: str, handler: Callable[..., Response], *, auth: bool = True) -> None:
        """Register an API route with and without a trailing slash; check the version segment."""

        def wrapped(request: Request, **params: str) -> Response:
            version = params.get("version")
            if version is not None and not _VERSION_RE.match(version):
                raise self.make_error(404, "NOT_FOUND", "")
            try:
                response = handler(request, **params)
            except RecordError as error:
                response = json_response([error.as_rest()], error.status)
            except ApiError as error:
                response = error.to_response()
            limit_info = request.environ.get("sandbox.limit_info")
            if limit_info:
                response.headers["Sforce-Limit-Info"] = limit_info
            return response

        self.router.add(method, pattern, wrapped, auth=auth)
        self.router.add(method, pattern + "/", wrapped, auth=auth)

    def setup_routes(self) -> None:
        self.api("GET", "/services/data", self.versions, auth=False)
        self.api("POST", "/services/oauth2/token", self.oauth_token, auth=False)
        self.api("POST", "/services/oauth2/revoke", self.oauth_revoke, auth=False)
        self.setup_oauth_routes()
        self.api("POST", "/services/Soap/u/{soap_version}", self.soap_login, auth=False)
        self.api("GET", "/id/{org_id}/{user_id}", self.identity)
        self.api("GET", "/services/oauth2/userinfo", self.userinfo)
        self.setup_bulk_routes()
        self.setup_query_routes()  # before the REST routes: /sobjects/X/updated is not a record id
        self.setup_describe_routes()  # likewise /sobjects/X/describe
        self.setup_rest_routes()
        self.control.add("POST", "/_sandbox/tokens/expire", self._control_expire_tokens)

    # -- errors, auth and the daily quota --------------------------------------------

    def make_error(self, status: int, reason: str, message: str, headers: Any = ()) -> ApiError:
        headers = list(headers)
        if reason == "NOT_FOUND":
            body = [{"errorCode": "NOT_FOUND", "message": "The requested resource does not exist"}]
        elif reason == "METHOD_NOT_ALLOWED":
            body = [{"errorCode": "METHOD_NOT_ALLOWED", "message": f"HTTP {message.removeprefix('Method ')}"}]
        elif reason == "BAD_REQUEST":
            body = [{"errorCode": "JSON_PARSER_ERROR", "message": message}]
        elif reason == "SERVER_ERROR":
            error_id = f"{self.rng.randrange(10**9, 10**10)}-{self.rng.randrange(10**4, 10**5)}"
            body = [
                {
                    "errorCode": "UNKNOWN_EXCEPTION",
                    "message": f"An unexpected error occurred. Please include this ErrorId if you contact "
                    f"support: {error_id} (-{self.rng.randrange(10**8, 10**9)})",
                }
            ]
        else:  # UNAVAILABLE and RATE_LIMITED: the CRM has no 429; overload is a 503
            status = 503
            body = [{"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable, please retry."}]
            if reason == "RATE_LIMITED" and not any(name == "Retry-After" for name, _ in headers):
                headers.append(("Retry-After", "1"))
        return ApiError(status, body, headers)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        # The org's own URL (OAuth instance_url, Outbound Message URLs) is the one clients use.
        if not self.config["instance_url"]:
            self._base_url = f"{environ.get('wsgi.url_scheme', 'http')}://{get_host(environ)}"
        return super().__call__(environ, start_response)

    @property
    def reported_quota(self) -> int:
        """The daily quota as reported to clients; an unlimited sandbox reports a large org's."""
        return self.config["daily_quota"] or UNLIMITED_QUOTA_REPORTED

    def guard(self, request: Request, route: Route) -> list[tuple[str, str]]:
        if self.config["instance_url"]:
            self._base_url = self.config["instance_url"].rstrip("/")
        if not route.auth:
            return []
        header = request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        known = scheme.lower() in ("bearer", "oauth") and (token == self.config["token"] or self.sessions.valid(token))
        if not known:
            body = [{"message": "Session expired or invalid", "errorCode": "INVALID_SESSION_ID"}]
            raise ApiError(401, body, [("WWW-Authenticate", "Token")])
        if self.rate_limiter.enabled:  # no 429 in this CRM: a short-window cap answers like overload
            window = self.rate_limiter.hit("org")
            if not window.allowed:
                raise self.make_error(503, "UNAVAILABLE", "", [("Retry-After", str(window.retry_after_s))])
        result = self.daily_quota.hit("org")
        limit_info = f"api-usage={self.daily_quota.used('org')}/{self.reported_quota}"
        request.environ["sandbox.limit_info"] = limit_info
        if not result.allowed:
            body = [{"message": "TotalRequests Limit exceeded.", "errorCode": "REQUEST_LIMIT_EXCEEDED"}]
            raise ApiError(403, body, [("Sforce-Limit-Info", limit_info)])
        return []

    def config_changed(self, keys: set[str]) -> None:
        self.store.duplicate_rule = self.config["duplicate_rule"]
        if "organization_id" in keys and hasattr(self, "sessions"):
            self.sessions.organization_id = self.config["organization_id"]

    # -- webhooks ------------------------------------------------------------------------

    def _on_commit(self, changes: list[Change]) -> None:
        """Queue Outbound Messages / change events for committed Contact changes (store lock held)."""
        config, events = self.config, []
        mode = config["change_events"] if config["change_events_enabled"] else "none"
        for change in changes:
            if change.sobject != "Contact":
                continue
            # Workflow rules fire on creates and edits; a delete or an undelete is neither.
            if change.kind not in ("DELETE", "UNDELETE") and config["outbound_messages"]:
                notification_id = self.store.new_id("04l")
                events.append({"channel": "outbound", "id": notification_id, "record_id": change.record_id})
            if mode == "all" or (mode == "deletes" and change.kind in ("DELETE", "UNDELETE")):
                record = self.store.get("Contact", change.record_id) or {}
                event = build_change_event(change, record, api_version=API_VERSION, spec=self.store.objects["Contact"])
                events.append({"channel": "events", "event": event})
        self.emit_events(events)
        self._run_workflows(changes)

    def _run_workflows(self, changes: list[Change]) -> None:
        """The org's flows: a Contact created or updated with X not V gets X set to V (store lock held)."""
        rules = self.config["workflow_rules"]
        for change in changes if rules else ():
            record = self.store.get("Contact", change.record_id) if change.sobject == "Contact" else None
            if record is None or record["IsDeleted"] or change.kind not in ("CREATE", "UPDATE"):
                continue
            rewrites = {
                rule["field"]: rule["value"]
                for rule in rules
                if (change.kind == "CREATE" or rule["field"] in change.changed)
                and record.get(rule["field"]) != rule["value"]
            }
            if rewrites:  # a moment later, as an asynchronous path of a flow runs
                timer = threading.Timer(
                    self.config["workflow_delay_ms"] / 1000, self._rewrite, (change.record_id, rewrites)
                )
                timer.daemon = True
                timer.start()

    def _rewrite(self, record_id: str, rewrites: dict[str, str]) -> None:
        try:
            with self.store.transaction(user_id=AUTOMATION_USER_ID, origin="") as tx:
                tx.update(self.store.objects["Contact"], record_id, rewrites)
        except RecordError:  # the flow fails on a value the org refuses, or on a deleted record
            logger.info("sandbox workflow rule failed", extra={"record_id": record_id})

    def _send_outbound_messages(self, events: list[dict[str, Any]], attempt: int) -> bool:
        url = self.config["webhook_url"]
        if not url:
            return False
        with self.store.lock:  # the record as it is now, not as it was when the change happened
            items = [
                (event["id"], "Contact", dict(record))
                for event in events
                if (record := self.store.get("Contact", event["record_id"])) is not None
            ]
        if not items:
            return True  # records forgotten by a reset: nothing left to say
        body = build_notifications(
            organization_id=self.config["organization_id"],
            action_id=self.action_id,
            base_url=self._base_url,
            api_version=API_VERSION,
            items=items,
            fields=self.config["outbound_fields"],
        )
        headers = {"Content-Type": "text/xml; charset=utf-8", "SOAPAction": '""'}
        result = post(url, body, headers, self.config["webhook_timeout_s"])
        return result is not None and result[0] == 200 and parse_ack(result[1])

    def _send_change_events(self, events: list[dict[str, Any]], attempt: int) -> bool:
        url = self.config["webhook_url"]
        if not url:
            return False
        body, headers = encode_change_events([event["event"] for event in events], self.config["change_event_secret"])
        result = post(url, body, headers, self.config["webhook_timeout_s"])
        return result is not None and 200 <= result[0] < 300

    # -- control-plane hooks -----------------------------------------------------------------

    def edit_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return ui_edit(self.store, payload, user_id=UI_USER_ID)

    def list_records(self) -> list[dict[str, Any]]:
        with self.store.lock:
            return [
                render(self.store.objects[name], record, None, API_VERSION)
                for name in ("Account", "Contact")
                for record in self.store.tables[name].values()
            ]

    def count_records(self) -> int:
        with self.store.lock:
            return sum(
                1 for table in self.store.tables.values() for record in table.values() if not record["IsDeleted"]
            )

    def reset_records(self) -> None:
        self.store.clear()
        self.cursors.clear()
        self.clear_bulk_jobs()

    def extra_stats(self) -> dict[str, Any]:
        with self.store.lock:
            objects = {
                name: {
                    "live": sum(1 for r in table.values() if not r["IsDeleted"]),
                    "deleted": sum(1 for r in table.values() if r["IsDeleted"]),
                }
                for name, table in self.store.tables.items()
            }
        return {
            "objects": objects,
            "api_usage": {"used": self.daily_quota.used("org"), "limit": self.reported_quota},
            "open_query_cursors": len(self.cursors),
        }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Salesforce-only flags of ``python -m sandbox salesforce`` (dest = config key)."""
    parser.add_argument(
        "--organization-id", dest="organization_id", default=None, help=f"org id (default {DEFAULT_ORGANIZATION_ID})"
    )
    parser.add_argument(
        "--token-ttl-s", dest="token_ttl_s", type=float, default=None, help="OAuth access token lifetime (default 7200)"
    )
    parser.add_argument(
        "--callback-url", dest="callback_urls", action="append", default=None, metavar="URL",
        help="a callback URL of the connected app (repeat for more); others are refused (default: none, any)",
    )  # fmt: skip
    parser.add_argument(
        "--instance-url",
        dest="instance_url",
        default=None,
        help="base URL to report (default: the Host the client used)",
    )
    parser.add_argument(
        "--change-events",
        dest="change_events",
        choices=_CHANGE_EVENT_MODES,
        default=None,
        help="JSON change events sent (default deletes)",
    )
    parser.add_argument(
        "--change-event-secret",
        dest="change_event_secret",
        default=None,
        help="HMAC secret of change events (default sandbox-secret)",
    )
    parser.add_argument(
        "--duplicate-rule",
        dest="duplicate_rule",
        choices=_DUPLICATE_RULES,
        default=None,
        help="Contact duplicate rule on Email: block, alert (allowSave header bypasses) or off (default)",
    )
    parser.add_argument(
        "--no-outbound-messages",
        dest="outbound_messages",
        action="store_const",
        const=False,
        default=None,
        help="do not send SOAP Outbound Messages",
    )


def create_app(**options: Any) -> SalesforceApp:
    """Build the app; ``options`` are ``seed`` plus any config key."""
    return SalesforceApp(**options)
