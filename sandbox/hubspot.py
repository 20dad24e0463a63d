"""HubSpot CRM v3 contacts emulator (CRUD, batch, search, OAuth, rate limits, webhooks v3).

Serve it with ``python -m sandbox hubspot --port 8102``; point the official SDK at
it with ``HubSpot(access_token="sandbox-token", host="http://127.0.0.1:8102")``.
Batch endpoints live in :mod:`sandbox.hubspot_batch`, search in
:mod:`sandbox.hubspot_search`, records in :mod:`sandbox.hubspot_store`.
"""

from __future__ import annotations

import argparse
import random
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

from werkzeug.wrappers import Request, Response

from sandbox.core import (
    ApiError,
    RollingWindowLimiter,
    Route,
    SandboxApp,
    coerce_non_negative,
    coerce_optional_int,
    coerce_quota,
    coerce_rate_limit,
    coerce_str,
    empty_response,
    json_response,
)
from sandbox.hubspot_batch import BatchRoutes
from sandbox.hubspot_oauth import OAuthRoutes
from sandbox.hubspot_properties_api import PropertyRoutes
from sandbox.hubspot_search import search
from sandbox.hubspot_store import DEFAULT_PROPERTIES, Contact, ContactStore, Source, hs_error
from sandbox.hubspot_webhooks import EventFactory, deliver

__all__ = ["DEFAULT_PORT", "HubSpotApp", "add_arguments", "create_app"]

DEFAULT_PORT = 8102
CONTACTS = "/crm/v3/objects/contacts"
SUBSCRIBED_PROPERTIES = ("email", "firstname", "lastname", "phone", "company", "jobtitle")


def _coerce_names(value: Any) -> tuple[str, ...]:
    if not isinstance(value, (list, tuple)) or not all(isinstance(name, str) for name in value):
        raise ValueError("expected a list of property names")
    return tuple(value)


def _coerce_id(value: Any) -> int:
    number = coerce_optional_int(value)
    if not number:
        raise ValueError("expected a positive integer")
    return number


def _coerce_rules(value: Any) -> tuple[dict[str, str], ...]:
    if not isinstance(value, (list, tuple)):
        raise ValueError("expected a list of {property, value} rules")
    rules = []
    for rule in value:
        if not isinstance(rule, Mapping) or not isinstance(rule.get("property"), str) or "value" not in rule:
            raise ValueError("each workflow rule needs a property and a value")
        rules.append({"property": rule["property"], "value": str(rule["value"])})
    return tuple(rules)


def _rate_limited(policy: str, message: str, retry_after: int, headers: Iterable[tuple[str, str]] = ()) -> ApiError:
    body = {
        "status": "error",
        "message": message,
        "errorType": "RATE_LIMIT",
        "correlationId": str(uuid.uuid4()),
        "policyName": policy,
        "groupName": f"publicapi:private-app-api-calls-{policy.lower().replace('_', '-')}",
    }
    return ApiError(429, body, [*headers, ("Retry-After", str(retry_after))])


class HubSpotApp(OAuthRoutes, BatchRoutes, PropertyRoutes, SandboxApp):
    """The HubSpot sandbox. Config keys beyond the core's are listed in CONFIG_FIELDS."""

    KIND = "hubspot"
    CONFIG_FIELDS: ClassVar[dict[str, tuple[Any, Any]]] = {
        **SandboxApp.CONFIG_FIELDS,
        "rate_limit": ({"max": 100, "interval_ms": 10_000}, coerce_rate_limit),
        "search_rate_limit": ({"max": 5, "interval_ms": 1_000}, coerce_rate_limit),
        "daily_quota": (250_000, coerce_quota),
        "token": ("sandbox-token", coerce_str),
        "client_id": ("sandbox-client", coerce_str),
        "client_secret": ("sandbox-secret", coerce_str),
        "refresh_token": ("sandbox-refresh-token", coerce_str),
        "token_ttl_s": (1800.0, coerce_non_negative),
        "redirect_uris": ((), _coerce_names),  # the app's redirect URLs; empty = any http(s) URL
        "app_id": (1234567, _coerce_id),
        "portal_id": (62515, _coerce_id),
        "ui_user_id": (45678, _coerce_id),
        "webhook_properties": (SUBSCRIBED_PROPERTIES, _coerce_names),
        # Workflows "on update of property X, set X to V": [{"property": X, "value": V}, ...]
        "workflow_rules": ((), _coerce_rules),
        "workflow_delay_ms": (50.0, coerce_non_negative),
    }

    def __init__(self, *, seed: int | None = None, **config: Any) -> None:
        # Ids start at a random point per run, as the Salesforce sandbox picks a random pod: a
        # restarted sandbox must not hand out ids SyncRoot already links to (real HubSpot never
        # reuses one). A seed makes them repeatable (1001, 1002, …).
        first_id = ContactStore.FIRST_ID if seed is not None else random.SystemRandom().randrange(10**6, 10**8) * 100
        self.store = ContactStore(first_id=first_id)
        self.clock: Callable[[], float] = time.monotonic  # token expiry; tests replace it instead of sleeping
        self.init_oauth()
        super().__init__(seed=seed, **config)
        self.search_limiter = RollingWindowLimiter.from_config(self.config["search_rate_limit"])
        self.events = EventFactory(self.config)

    # -- core hooks ------------------------------------------------------------

    def setup_routes(self) -> None:
        add = self.router.add
        add("POST", CONTACTS, self.create_contact)
        add("GET", CONTACTS, self.list_contacts)
        add("GET", CONTACTS + "/{id}", self.get_contact)
        add("PATCH", CONTACTS + "/{id}", self.update_contact)
        add("DELETE", CONTACTS + "/{id}", self.archive_contact)
        add("POST", CONTACTS + "/search", self.search_contacts, tags={"search"})
        add("POST", CONTACTS + "/merge", self.merge_contacts)
        add("POST", CONTACTS + "/gdpr-delete", self.gdpr_delete)
        self.add_batch_routes(CONTACTS + "/batch")
        self.add_property_routes()
        self.add_oauth_routes()
        self.control.add("POST", "/_sandbox/seed", self._control_seed)
        self.control.add("POST", "/_sandbox/tokens/expire", self._control_expire_tokens)

    def make_error(self, status: int, reason: str, message: str, headers: Iterable[tuple[str, str]] = ()) -> ApiError:
        if reason == "RATE_LIMITED":
            return _rate_limited(
                "TEN_SECONDLY_ROLLING", "You have reached your ten_secondly_rolling limit.", 1, headers
            )
        category = {
            "NOT_FOUND": "OBJECT_NOT_FOUND",
            "METHOD_NOT_ALLOWED": "METHOD_NOT_ALLOWED",
            "BAD_REQUEST": "VALIDATION_ERROR",
            "UNAVAILABLE": "SERVICE_UNAVAILABLE",
        }.get(reason, "INTERNAL_ERROR")
        return hs_error(status, category, message, headers)

    def config_changed(self, keys: set[str]) -> None:
        self.oauth_config_changed(keys)
        if "search_rate_limit" in keys:
            self.search_limiter = RollingWindowLimiter.from_config(self.config["search_rate_limit"])

    def guard(self, request: Request, route: Route) -> list[tuple[str, str]]:
        if not route.auth:
            return []
        header = request.environ.get("HTTP_AUTHORIZATION", "")
        token = header[7:].strip() if header[:7].lower() == "bearer " else ""
        private_app = token == self.config["token"]
        if not private_app:
            self.check_oauth_token(token)
        if "search" in route.tags:
            # Search has its own per-second limit and its responses carry no limit headers.
            hit = self.search_limiter.hit(token)
            if not hit.allowed:
                raise _rate_limited("SECONDLY", "You have reached your secondly limit.", hit.retry_after_s)
            return []
        limiter = self.rate_limiter
        hit = limiter.hit(token)
        headers = []
        if limiter.enabled:
            headers = [
                ("X-HubSpot-RateLimit-Interval-Milliseconds", str(limiter.interval_ms)),
                ("X-HubSpot-RateLimit-Max", str(hit.limit)),
                ("X-HubSpot-RateLimit-Remaining", str(hit.remaining)),
            ]
            if not hit.allowed:
                raise _rate_limited(
                    "TEN_SECONDLY_ROLLING",
                    "You have reached your ten_secondly_rolling limit.",
                    hit.retry_after_s,
                    headers,
                )
        daily = self.daily_quota.hit("portal")
        if daily.limit and private_app:
            headers.append(("X-HubSpot-RateLimit-Daily", str(daily.limit)))
            headers.append(("X-HubSpot-RateLimit-Daily-Remaining", str(daily.remaining)))
        if not daily.allowed:
            raise _rate_limited("DAILY", "You have reached your daily limit.", daily.retry_after_s, headers)
        return headers

    # -- records and events ----------------------------------------------------

    @property
    def api_source(self) -> Source:
        return Source("INTEGRATION", str(self.config["app_id"]))

    @property
    def ui_source(self) -> Source:
        return Source("CRM_UI", f"userId:{self.config['ui_user_id']}")

    def created(self, contact: Contact, properties: Mapping[str, str], source: Source) -> None:
        if self.config["webhook_url"]:
            self.emit_events(self.events.creation(contact.id, properties, source, contact.created_ms))

    def changed(self, contact: Contact, changed: Mapping[str, str], source: Source) -> None:
        if changed and self.config["webhook_url"]:
            self.emit_events(self.events.property_changes(contact.id, changed, source, contact.updated_ms))
        self._run_workflows(contact, changed)

    def _run_workflows(self, contact: Contact, changed: Mapping[str, str]) -> None:
        """The portal's workflows: an update of X to anything but V sets X to V, as the automation."""
        rewrites = {
            rule["property"]: rule["value"]
            for rule in self.config["workflow_rules"]
            if rule["property"] in changed and changed[rule["property"]] != rule["value"]
        }
        if rewrites:  # workflows run a moment after the change that enrolled the record, as in HubSpot
            timer = threading.Timer(self.config["workflow_delay_ms"] / 1000, self._rewrite, (contact, rewrites))
            timer.daemon = True
            timer.start()

    def _rewrite(self, contact: Contact, rewrites: dict[str, str]) -> None:
        try:
            done = self.store.update(contact, self.store.validate(rewrites, creating=False))
        except ApiError:  # an archived contact or a value the portal refuses: the workflow fails
            return
        if done and self.config["webhook_url"]:
            source = Source("AUTOMATION_PLATFORM", "workflow")
            self.emit_events(self.events.property_changes(contact.id, done, source, contact.updated_ms))

    def archived(self, contact: Contact, source: Source) -> None:
        if self.config["webhook_url"]:
            self.emit_events(self.events.deletion(contact.id, source, contact.archived_ms or contact.updated_ms))

    def merged(self, primary: Contact, merged_id: str, moved: int, source: Source) -> None:
        if self.config["webhook_url"]:
            events = self.events.merge(primary.id, [merged_id], primary.id, moved, source, primary.updated_ms)
            self.emit_events(events)

    def restored(self, contact: Contact, source: Source) -> None:
        if self.config["webhook_url"]:
            self.emit_events(self.events.restore(contact.id, source, contact.updated_ms))

    def purged(self, contact_id: str, source: Source) -> None:
        if self.config["webhook_url"]:
            self.emit_events(self.events.privacy_deletion(contact_id, source, int(time.time() * 1000)))

    def deliver_webhooks(self, events: list[Any], attempt: int) -> bool:
        url = self.config["webhook_url"]
        if not url:
            return False
        return deliver(url, self.config["client_secret"], events, attempt, self.config["webhook_timeout_s"])

    # -- contacts --------------------------------------------------------------

    @staticmethod
    def requested_properties(request: Request) -> list[str] | None:
        """``properties`` given repeated and/or comma-joined; None when absent."""
        names = [name.strip() for value in request.args.getlist("properties") for name in value.split(",")]
        names = [name for name in names if name]
        return names or None

    @staticmethod
    def archived_flag(request: Request) -> bool:
        return request.args.get("archived", "false").strip().lower() == "true"

    def _properties_input(self, request: Request) -> Any:
        body = self.json_body(request)
        if not isinstance(body, dict):
            raise hs_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1: expected an object")
        return body.get("properties", {})

    def create_contact(self, request: Request) -> Response:
        properties = self.store.validate(self._properties_input(request), creating=True)
        contact = self.store.create(properties, source=self.api_source)
        self.created(contact, properties, self.api_source)
        return json_response(contact.to_json(), 201)

    def get_contact(self, request: Request, id: str) -> Response:
        contact = self.store.resolve(id, request.args.get("idProperty"), archived=self.archived_flag(request))
        return json_response(contact.to_json(self.requested_properties(request) or DEFAULT_PROPERTIES))

    def update_contact(self, request: Request, id: str) -> Response:
        properties = self._properties_input(request)
        contact = self.store.resolve(id, request.args.get("idProperty"))
        changed = self.store.update(contact, self.store.validate(properties, creating=False))
        self.changed(contact, changed, self.api_source)
        return json_response(contact.to_json())

    def archive_contact(self, request: Request, id: str) -> Response:
        contact = self.store.archive(id)
        if contact is not None:
            self.archived(contact, self.api_source)
        return empty_response(204)

    def merge_contacts(self, request: Request) -> Response:
        """``{"primaryObjectId", "objectIdToMerge"}`` → 200 SimplePublicObject of the survivor."""
        body = self.json_body(request)
        if not isinstance(body, dict) or not body.get("primaryObjectId") or not body.get("objectIdToMerge"):
            raise hs_error(400, "VALIDATION_ERROR", "primaryObjectId and objectIdToMerge are required")
        primary, other = str(body["primaryObjectId"]), str(body["objectIdToMerge"])
        survivor, moved = self.store.merge(primary, other)
        self.merged(survivor, other, moved, self.api_source)
        return json_response(survivor.to_json())

    def gdpr_delete(self, request: Request) -> Response:
        """``{"objectId", "idProperty"?}`` → 204; the record is gone for good and its email blocklisted."""
        body = self.json_body(request)
        if not isinstance(body, dict) or body.get("objectId") in (None, ""):
            raise hs_error(400, "VALIDATION_ERROR", "objectId is required")
        purged = self.store.purge(str(body["objectId"]), body.get("idProperty"))
        if purged is not None:
            self.purged(purged, self.api_source)
        return empty_response(204)

    def list_contacts(self, request: Request) -> Response:
        try:
            limit = int(request.args.get("limit", "10"))
        except ValueError:
            raise hs_error(400, "VALIDATION_ERROR", "limit must be an integer") from None
        if not 0 < limit <= 100:
            raise hs_error(400, "VALIDATION_ERROR", "limit must be between 1 and 100")
        names = self.requested_properties(request) or DEFAULT_PROPERTIES
        page, after = self.store.page(request.args.get("after"), limit, archived=self.archived_flag(request))
        body: dict[str, Any] = {"results": [contact.to_json(names) for contact in page]}
        if after is not None:
            link = f"{request.host_url}crm/v3/objects/contacts?after={after}"
            body["paging"] = {"next": {"after": after, "link": link}}
        return json_response(body)

    def search_contacts(self, request: Request) -> Response:
        return json_response(search(self.store.live(), self.json_body(request)))

    # -- control plane ---------------------------------------------------------

    def edit_record(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        source, store = self.ui_source, self.store
        contact_id = payload.get("id")
        fields = payload.get("fields") or {}
        try:
            if contact_id is None and any(payload.get(k) for k in ("delete", "restore", "gdpr_delete", "merge_into")):
                raise ValueError("delete, restore, gdpr_delete and merge_into need an id")
            if payload.get("restore"):  # from the recycle bin, as a person does in the UI
                contact = store.restore(str(contact_id))
                self.restored(contact, source)
            elif payload.get("gdpr_delete"):
                purged = store.purge(str(contact_id), None)
                self.purged(str(purged), source)
                return {"id": str(purged), "gdpr_deleted": True}
            elif payload.get("merge_into"):  # the UI's merge: this record into the primary one
                contact, moved = store.merge(str(payload["merge_into"]), str(contact_id))
                self.merged(contact, str(contact_id), moved, source)
            elif payload.get("delete"):
                contact = store.archive(str(contact_id))
                if contact is None:
                    raise KeyError(contact_id)
                self.archived(contact, source)
            elif contact_id is None:
                properties = store.validate(fields, creating=True)
                contact = store.create(properties, source=source)
                self.created(contact, properties, source)
            else:
                contact = store.get(str(contact_id))
                self.changed(contact, store.update(contact, store.validate(fields, creating=False)), source)
        except ApiError as error:
            if error.status == 404:
                raise KeyError(contact_id) from None
            raise ValueError(error.body.get("message", "invalid edit")) from None
        return contact.to_json()

    def list_records(self) -> list[dict[str, Any]]:
        return [contact.to_json() for contact in list(self.store.records.values())]

    def count_records(self) -> int:
        return self.store.count_live()

    def reset_records(self) -> None:
        self.store.clear()

    def seed_contacts(
        self, count: int, *, prefix: str = "seed", domain: str = "example.com", spacing_ms: int = 0
    ) -> list[str]:
        """Create ``count`` contacts directly (no webhooks, no API accounting); their ids.

        ``spacing_ms``: created that far apart, the last one now (as a portal filled over time is;
        0: all at once, as fast as the store takes them)."""
        source, ids = self.api_source, []
        start_ms = int(time.time() * 1000) - (count - 1) * spacing_ms
        for index in range(count):
            properties = {"email": f"{prefix}-{index}@{domain}", "firstname": "Seed", "lastname": f"Contact {index}"}
            now_ms = start_ms + index * spacing_ms if spacing_ms else None
            ids.append(self.store.create(properties, source=source, now_ms=now_ms).id)
        return ids

    def _control_expire_tokens(self, request: Request) -> Response:
        return json_response({"expired": self.expire_access_tokens()})

    def _control_seed(self, request: Request) -> Response:
        body = self._control_json(request)
        count = coerce_optional_int(body.get("count", 0)) or 0
        ids = self.seed_contacts(
            count, prefix=str(body.get("prefix", "seed")), domain=str(body.get("domain", "example.com")),
            spacing_ms=coerce_optional_int(body.get("spacing_ms", 0)) or 0,
        )  # fmt: skip
        return json_response(
            {"created": len(ids), "first_id": ids[0] if ids else None, "last_id": ids[-1] if ids else None}
        )


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """HubSpot-only flags; dest names are config keys."""
    parser.add_argument("--refresh-token", dest="refresh_token", default=None, help="refresh token always accepted")
    parser.add_argument(
        "--token-ttl-s", dest="token_ttl_s", type=float, default=None, help="OAuth access token lifetime"
    )
    parser.add_argument("--app-id", dest="app_id", type=int, default=None, help="app id (default 1234567)")
    parser.add_argument("--portal-id", dest="portal_id", type=int, default=None, help="portal id (default 62515)")
    parser.add_argument(
        "--redirect-uri", dest="redirect_uris", action="append", default=None, metavar="URL",
        help="a redirect URL of the app (repeat for more); the consent page refuses any other (default: none, any)",
    )  # fmt: skip


def create_app(**options: Any) -> HubSpotApp:
    """Build the HubSpot sandbox app; ``options`` are ``seed`` and any config key."""
    return HubSpotApp(**options)
