"""HubSpot behind the provider interface."""

from __future__ import annotations

import heapq
import os
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from crm.base import (
    Authorization,
    Grant,
    InboundChange,
    OAuthConnect,
    Permanent,
    Provider,
    PushItem,
    PushResult,
    RemoteField,
)
from crm.hubspot import schema, transform, webhook
from crm.hubspot.client import (
    BATCH_LIMIT,
    SEARCH_PAGE_LIMIT,
    HubSpotClient,
    chunked,
)
from crm.hubspot.push import PushRun
from syncroot import queues

# Subscription types (and their generic `object.*` forms for contacts, objectTypeId 0-1) we act on.
_NO_TIME = datetime.min.replace(tzinfo=UTC)
_GONE_EVENTS = {"deletion"}
_FETCH_EVENTS = {"creation"}


class HubSpotProvider(Provider, OAuthConnect):
    kind = "hubspot"
    label = "HubSpot"
    webhook_queue = queues.WEBHOOKS_HUBSPOT
    batch_size = BATCH_LIMIT  # CRM v3 batch endpoints
    search_page_size = SEARCH_PAGE_LIMIT

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._client: HubSpotClient | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()

    account_settings = ("access_token", "refresh_token", "portal_id")
    account_setting = "portal_id"
    instance_settings = ("base_url",)

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        return bool(config.get("access_token") or config.get("refresh_token"))

    def account_id(self) -> str:
        return self.client.account_id()

    # --- connecting a portal with OAuth (this provider built with the app's settings) ----------
    def authorization(self, *, redirect_uri: str, state: str) -> Authorization:
        url = self._app_client().authorize_url(
            authorize_url=str(self.config.get("authorize_url") or ""), scopes=str(self.config.get("scopes") or ""),
            redirect_uri=redirect_uri, state=state,
        )  # fmt: skip
        return Authorization(url=url)

    def authorization_grant(self, *, code: str, redirect_uri: str, code_verifier: str = "") -> Grant:
        client = self._app_client()
        tokens = client.exchange_code(code=code, redirect_uri=redirect_uri)
        credentials = {
            "refresh_token": str(tokens["refresh_token"]),
            "client_id": str(self.config.get("client_id") or ""),
            "client_secret": str(self.config.get("client_secret") or ""),
        }
        # Portals connected from the admin keep the API base their code was exchanged at.
        return Grant(credentials=credentials, instance_url=str(self.config.get("oauth_base_url") or "").rstrip("/"))

    def _app_client(self) -> HubSpotClient:
        base = self.config.get("oauth_base_url") or self.config.get("base_url")
        return HubSpotClient({**self.config, "base_url": base, "access_token": "", "refresh_token": ""})

    def webhook_account(self, payload: Mapping[str, Any]) -> str | None:
        portal = payload.get("portalId")
        return str(portal) if portal not in (None, "") else None

    @property
    def client(self) -> HubSpotClient:
        """Built on first use and reused; rebuilt in a forked worker (a pooled socket must not be shared)."""
        if self._client is None or self._client_pid != os.getpid():
            with self._client_lock:
                if self._client is None or self._client_pid != os.getpid():
                    self._client = HubSpotClient(self.config)
                    self._client_pid = os.getpid()
        return self._client

    # --- outbound ------------------------------------------------------------------------------
    def push(self, items: list[PushItem]) -> list[PushResult]:
        if not items:
            return []
        run = PushRun(self.client, items)
        if len(items) == 1:
            run.single(0)
        else:
            run.batched()
        return run.finish()

    def merge_records(self, *, survivor_id: str, loser_id: str) -> str | None:
        try:
            return str(self.client.merge(survivor_id, loser_id)["id"])
        except Permanent as exc:
            if exc.status not in (400, 404):
                raise
            refused = exc
        # One of the two is not live. A merged-away id answers with its survivor; a deleted one, 404.
        if self._live_id(loser_id) != loser_id:  # merged already (by a person, or an earlier attempt
            return survivor_id  # of ours), or deleted: nothing left to merge
        survivor = self._live_id(survivor_id)
        if survivor is None:  # a person deleted it: no merge; the caller deletes the loser instead
            return None
        if survivor == loser_id:  # a person merged the two the other way round: one record already
            return loser_id
        if survivor != survivor_id:  # a person merged it into another record: merge into that one
            return str(self.client.merge(survivor, loser_id)["id"])
        raise refused

    def _live_id(self, contact_id: str) -> str | None:
        """The id HubSpot answers a record with (its survivor's when merged away); None when deleted."""
        try:
            return str(self.client.get(contact_id)["id"])
        except Permanent as exc:
            if exc.status != 404:
                raise
            return None

    def probe(self) -> None:
        self.client.probe()

    def fields(self) -> list[RemoteField]:
        return [schema.remote_field(prop) for prop in schema.list_properties(self.client)]

    def fetch(self, external_ids: list[str], *, extra: tuple[str, ...] | None = None) -> list[InboundChange]:
        found: dict[str, dict[str, Any]] = {}
        extra = self.extra_fields() if extra is None else extra
        properties = transform.read_properties(extra)  # in the request body: no URL grows with them
        for chunk in chunked(list(dict.fromkeys(external_ids))):
            outcome = self.client.batch_read(chunk, properties=properties)
            found.update((str(obj["id"]), obj) for obj in outcome.results)
        # Ids HubSpot does not return are archived (deleted) or never existed: both mean gone.
        return [
            transform.object_to_change(found[eid], extra)
            if eid in found
            else InboundChange(external_id=eid, deleted=True)
            for eid in (str(e) for e in external_ids)
        ]

    def changes_since(self, *, modstamp: datetime | None, last_id: str) -> Iterator[InboundChange]:
        """Modified and archived contacts after the cursor, merged into one oldest-first stream.

        The reconciler saves its cursor as it goes, so the stream must never step back in time:
        deletions are read first (the archive has no time filter) and merged in by when they
        happened, instead of following every modified contact.
        """
        since_ms = transform.to_epoch_ms(modstamp) if modstamp is not None else None
        deletions: list[InboundChange] = []
        if self.config.get("reconcile_archived", True):
            # Search never returns archived contacts, so a dropped deletion webhook is only
            # repaired by reading the archive (costs one request per 100 archived contacts).
            # A deleted record that absorbed others in a merge names them: the merge is followed
            # even when its webhook was lost and the survivor was deleted before any read.
            properties = [transform.MODIFIED_PROPERTY, transform.MERGED_PROPERTY]
            for obj in self.client.iter_archived(properties=properties):
                archived_at = transform.parse_time(obj.get("archivedAt"))
                if modstamp is None or (archived_at is not None and archived_at >= modstamp):
                    absorbed = transform.merged_ids(obj.get("properties") or {})
                    deletions.append(InboundChange(external_id=str(obj["id"]), occurred_at=archived_at, deleted=True,
                                                   absorbed=absorbed))  # fmt: skip
        extra = self.extra_fields()
        objects = self.client.iter_modified_since(
            since_ms=since_ms,
            after_id=last_id if since_ms is not None else "",
            properties=transform.read_properties(extra),
            page_size=self.search_page_size,
        )
        modified = (transform.object_to_change(obj, extra) for obj in objects)
        yield from heapq.merge(modified, sorted(deletions, key=_when), key=_when)

    def count_since(self, *, modstamp: datetime | None) -> int | None:
        body: dict[str, Any] = {"limit": 1, "properties": ["email"], "filterGroups": []}
        if modstamp is not None:
            since = {
                "propertyName": transform.MODIFIED_PROPERTY,
                "operator": "GTE",
                "value": str(transform.to_epoch_ms(modstamp)),
            }
            body["filterGroups"] = [{"filters": [since]}]
        try:
            return int(self.client.search(body)["total"])
        except (KeyError, TypeError, ValueError):
            return None

    # --- inbound -------------------------------------------------------------------------------
    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str], url: str, query: Mapping[str, str]):
        return webhook.parse_webhook(
            body=body, headers=headers, url=url, secret=str(self.config.get("client_secret") or "")
        )

    def webhook_change(self, payload: dict[str, Any]) -> InboundChange | None:
        kind = str(payload.get("subscriptionType") or payload.get("eventType") or "")
        object_type, _, action = kind.partition(".")
        if object_type == "object" and str(payload.get("objectTypeId", "")) == "0-1":
            object_type = "contact"
        if object_type != "contact" or payload.get("objectId") in (None, ""):
            return None
        external_id = str(payload["objectId"])
        try:
            occurred_at = transform.parse_time(payload.get("occurredAt"))
        except ValueError:
            occurred_at = None
        app_id = str(self.config.get("app_id") or "")
        from_integration = bool(
            app_id and payload.get("changeSource") == "INTEGRATION" and str(payload.get("sourceId", "")) == app_id
        )
        base = {"external_id": external_id, "occurred_at": occurred_at, "from_integration": from_integration}
        if action == "propertyChange":
            prop = str(payload.get("propertyName") or "")
            field = transform.field_for_property(prop)
            if field is None:
                if prop not in self.extra_fields():
                    return None  # a property nothing maps: it changes nothing anywhere
                remote = transform.extra_values({prop: payload.get("propertyValue")}, (prop,))
                return InboundChange(remote=remote, remote_times={prop: occurred_at} if occurred_at else {}, **base)
            value = transform.from_hubspot({prop: payload.get("propertyValue")})[field]
            field_times = {field: occurred_at} if occurred_at else {}
            return InboundChange(values={field: value}, field_times=field_times, **base)
        if action in _FETCH_EVENTS:
            return InboundChange(complete=False, **base)
        if action == "merge":  # the survivor (newObjectId) absorbed the others: read it
            survivor = str(payload.get("newObjectId") or payload.get("primaryObjectId") or external_id)
            ids = [payload.get("primaryObjectId"), *(payload.get("mergedObjectIds") or ())]
            absorbed = tuple(dict.fromkeys(str(i) for i in ids if i not in (None, "") and str(i) != survivor))
            base["external_id"] = survivor
            return InboundChange(complete=False, absorbed=absorbed, **base)
        if action == "restore":
            return InboundChange(complete=False, restored=True, **base)
        if action == "privacyDeletion":
            return InboundChange(deleted=True, erased=True, **base)
        if action in _GONE_EVENTS:
            return InboundChange(deleted=True, **base)
        return None

    def record_url(self, external_id: str) -> str | None:
        template = str(self.config.get("record_url") or "")
        portal_id = str(self.config.get("portal_id") or "")
        if not template or ("{portal_id}" in template and not portal_id):
            return None
        return template.format(portal_id=portal_id, id=external_id)


def _when(change: InboundChange) -> datetime:
    return change.occurred_at or _NO_TIME
