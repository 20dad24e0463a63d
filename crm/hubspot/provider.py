"""HubSpot behind the provider interface."""

from __future__ import annotations

import heapq
import os
import re
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from crm.base import (
    InboundChange,
    Permanent,
    Provider,
    ProviderError,
    PushItem,
    PushResult,
    RemoteField,
    Transient,
)
from crm.hubspot import schema, transform, webhook
from crm.hubspot.client import (
    BATCH_LIMIT,
    SEARCH_PAGE_LIMIT,
    BatchResult,
    HubSpotClient,
    chunked,
    classify_item_error,
)
from syncroot import queues

_EXISTING_ID = re.compile(r"Existing ID:\s*(\d+)")
# Subscription types (and their generic `object.*` forms for contacts, objectTypeId 0-1) we act on.
_NO_TIME = datetime.min.replace(tzinfo=UTC)
_GONE_EVENTS = {"deletion", "privacyDeletion"}
_FETCH_EVENTS = {"creation", "restore"}


class HubSpotProvider(Provider):
    name = "hubspot"
    label = "HubSpot"
    webhook_queue = queues.WEBHOOKS_HUBSPOT
    batch_size = BATCH_LIMIT  # CRM v3 batch endpoints
    search_page_size = SEARCH_PAGE_LIMIT

    def __init__(self, config: Mapping[str, Any]) -> None:
        super().__init__(config)
        self._client: HubSpotClient | None = None
        self._client_pid = 0
        self._client_lock = threading.Lock()

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        return bool(config.get("access_token") or config.get("refresh_token"))

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
        run = _PushRun(self.client, items)
        if len(items) == 1:
            run.single(0)
        else:
            run.batched()
        return run.finish()

    def probe(self) -> None:
        self.client.probe()

    def fields(self) -> list[RemoteField]:
        return [schema.remote_field(prop) for prop in schema.list_properties(self.client)]

    def fetch(self, external_ids: list[str]) -> list[InboundChange]:
        found: dict[str, dict[str, Any]] = {}
        for chunk in chunked(list(dict.fromkeys(external_ids))):
            outcome = self.client.batch_read(chunk, properties=transform.READ_PROPERTIES)
            found.update((str(obj["id"]), obj) for obj in outcome.results)
        # Ids HubSpot does not return are archived (deleted) or never existed: both mean gone.
        return [
            transform.object_to_change(found[eid]) if eid in found else InboundChange(external_id=eid, deleted=True)
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
            for obj in self.client.iter_archived(properties=[transform.MODIFIED_PROPERTY]):
                archived_at = transform.parse_time(obj.get("archivedAt"))
                if modstamp is None or (archived_at is not None and archived_at >= modstamp):
                    deletions.append(InboundChange(external_id=str(obj["id"]), occurred_at=archived_at, deleted=True))
        objects = self.client.iter_modified_since(
            since_ms=since_ms,
            after_id=last_id if since_ms is not None else "",
            properties=transform.READ_PROPERTIES,
            page_size=self.search_page_size,
        )
        modified = (transform.object_to_change(obj) for obj in objects)
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
            field = transform.field_for_property(str(payload.get("propertyName") or ""))
            if field is None:
                return None
            value = transform.from_hubspot({payload["propertyName"]: payload.get("propertyValue")})[field]
            field_times = {field: occurred_at} if occurred_at else {}
            return InboundChange(values={field: value}, field_times=field_times, **base)
        if action in _FETCH_EVENTS:
            return InboundChange(complete=False, **base)
        if action in _GONE_EVENTS:
            return InboundChange(deleted=True, **base)
        return None

    def record_url(self, external_id: str) -> str | None:
        template = str(self.config.get("record_url") or "")
        portal_id = str(self.config.get("portal_id") or "")
        if not template or ("{portal_id}" in template and not portal_id):
            return None
        return template.format(portal_id=portal_id, id=external_id)


class _PushRun:
    """One push call: routes items to the cheapest endpoints and maps every answer back to its item.

    After a whole-call failure (timeout, 429, auth) no further requests are made; items not yet
    written carry that error. `finish` raises it instead when nothing at all was written.
    """

    def __init__(self, client: HubSpotClient, items: list[PushItem]) -> None:
        self.client = client
        self.items = items
        self.results: dict[int, PushResult] = {}
        self.abort: ProviderError | None = None

    def finish(self) -> list[PushResult]:
        if self.abort is not None and not any(r.ok for r in self.results.values()):
            raise self.abort
        return [self.results.get(i) or self._failed(i, self.abort) for i in range(len(self.items))]

    def _ok(self, index: int, external_id: str | None, operation: str) -> None:
        self.results[index] = PushResult(key=self.items[index].key, external_id=external_id, operation=operation)

    def _failed(self, index: int, error: ProviderError | None) -> PushResult:
        item = self.items[index]
        error = error or Transient("HubSpot returned no result for this record", code="NO_RESULT")
        operation = "delete" if item.delete else "update" if item.external_id else "create"
        result = PushResult(key=item.key, external_id=item.external_id, error=error, operation=operation)
        self.results[index] = result
        return result

    # --- one item: single-record endpoints -----------------------------------------------------
    def single(self, index: int) -> None:
        item = self.items[index]
        properties = transform.to_hubspot(item.values)
        try:
            if item.delete:
                self._delete_one(index)
            elif item.external_id:
                self._update_one(index, properties)
            else:
                self._create_one(index, properties)
        except Permanent as exc:
            self._failed(index, exc)
        except ProviderError as exc:
            self.abort = exc

    def _delete_one(self, index: int) -> None:
        external_id = self.items[index].external_id
        if external_id:
            try:
                self.client.archive(external_id)
            except Permanent as exc:
                if exc.status != 404:  # already gone is what we wanted
                    raise
        self._ok(index, external_id, "delete")

    def _update_one(self, index: int, properties: dict[str, str]) -> None:
        external_id = str(self.items[index].external_id)
        if not properties:
            self._ok(index, external_id, "update")
            return
        try:
            self.client.update(external_id, properties)
        except Permanent as exc:
            if exc.status != 404:
                raise
            self._recreate_one(index, properties, exc)
            return
        self._ok(index, external_id, "update")

    def _recreate_one(self, index: int, properties: dict[str, str], gone: Permanent) -> None:
        """The linked contact was deleted in HubSpot: match by email or create, if we can."""
        if not properties.get("email"):
            self._failed(index, _gone_error(self.items[index].external_id, gone))
            return
        self._create_one(index, properties)

    def _create_one(self, index: int, properties: dict[str, str]) -> None:
        try:
            created = self.client.create(properties)
        except Permanent as exc:
            existing = _EXISTING_ID.search(exc.message) if exc.status == 409 else None
            if existing is None:
                raise
            # Someone (or an earlier attempt of ours) already created this email: link to it.
            self.client.update(existing.group(1), properties)
            self._ok(index, existing.group(1), "match")
            return
        self._ok(index, str(created["id"]), "create")

    # --- several items: batch endpoints --------------------------------------------------------
    def batched(self) -> None:
        deletes, linked, by_email, bare = [], [], [], []
        for index, item in enumerate(self.items):
            if item.delete:
                deletes.append(index)
            elif item.external_id:
                linked.append(index)
            elif transform.normalise_email(item.values.get("email")):
                by_email.append(index)
            else:
                bare.append(index)
        self._archive(deletes)  # first: a new contact taking a deleted one's email must not match its record
        by_email.extend(self._update(linked))
        self._upsert(by_email)
        for index in bare:  # no email to match on: rare, and only single creates can take them
            if self.abort is None:
                self.single(index)

    def _archive(self, indexes: list[int]) -> None:
        for index in indexes:
            if not self.items[index].external_id:
                self._ok(index, None, "delete")  # never reached HubSpot: nothing to delete there
        linked = [i for i in indexes if self.items[i].external_id]

        def apply(chunk: list[int], inputs: list[str], outcome: BatchResult) -> None:
            for index in chunk:
                self._ok(index, self.items[index].external_id, "delete")

        for group in _rounds(linked, lambda i: str(self.items[i].external_id)):
            for chunk in chunked(group):
                ids = [str(self.items[i].external_id) for i in chunk]
                self._call_batch(list(chunk), ids, self.client.batch_archive, apply)

    def _update(self, indexes: list[int]) -> list[int]:
        """batch/update by stored id; returns the items whose contact was deleted in HubSpot."""
        gone: list[int] = []

        def apply(chunk: list[int], inputs: list[tuple[str, dict[str, str]]], outcome: BatchResult) -> None:
            objects, errors = _by_position(outcome, [external_id for external_id, _ in inputs])
            for position, (index, (external_id, properties)) in enumerate(zip(chunk, inputs, strict=True)):
                error = errors.get(position)
                if position in objects and error is None:
                    self._ok(index, external_id, "update")
                elif error is not None and error.status == 404:
                    if properties.get("email"):
                        gone.append(index)
                    else:
                        self._failed(index, _gone_error(external_id, error))
                else:
                    self._failed(index, error)

        for group in _rounds(indexes, lambda i: str(self.items[i].external_id)):
            for chunk in chunked(group):
                inputs = [(str(self.items[i].external_id), transform.to_hubspot(self.items[i].values)) for i in chunk]
                self._call_batch(list(chunk), inputs, self.client.batch_update, apply)
        return gone

    def _upsert(self, indexes: list[int]) -> None:
        """batch/upsert by email: HubSpot matches or creates in one call, `new` tells which."""

        def email(index: int) -> str:
            return transform.normalise_email(self.items[index].values.get("email"))

        def apply(chunk: list[int], inputs: list[tuple[str, dict[str, str]]], outcome: BatchResult) -> None:
            objects, errors = _by_position(outcome, [key for key, _ in inputs])
            for position, index in enumerate(chunk):
                obj = objects.get(position)
                if obj is not None and position not in errors:
                    self._ok(index, str(obj["id"]), "create" if obj.get("new") else "match")
                else:
                    self._failed(index, errors.get(position))

        for group in _rounds(indexes, email):
            for chunk in chunked(group):
                properties = [transform.to_hubspot(self.items[i].values) for i in chunk]
                inputs = [(email(i), props) for i, props in zip(chunk, properties, strict=True)]
                self._call_batch(list(chunk), inputs, self.client.batch_upsert, apply)

    def _call_batch(self, chunk: list[int], inputs: list[Any], call, apply) -> None:
        """One batch call, its answer handed to `apply`. A 400/409 refusing the whole batch is split
        in halves until the bad record is alone, so one invalid contact cannot hold back the others.
        A whole-call failure of another kind stops the run: the items keep no result."""
        if self.abort is not None:
            return
        try:
            outcome = call(inputs)
        except Permanent as exc:
            if len(inputs) == 1 or exc.status not in (400, 409):
                for index in chunk:
                    self._failed(index, exc)
                return
            middle = len(inputs) // 2
            self._call_batch(chunk[:middle], inputs[:middle], call, apply)
            self._call_batch(chunk[middle:], inputs[middle:], call, apply)
            return
        except ProviderError as exc:
            self.abort = exc
            return
        apply(chunk, inputs, outcome)


def _rounds(indexes: list[int], key) -> list[list[int]]:
    """Split so no key repeats within a round: HubSpot refuses duplicate ids in one batch."""
    rounds: list[list[int]] = []
    seen: list[set[str]] = []
    for index in indexes:
        k = key(index)
        for number, keys in enumerate(seen):
            if k not in keys:
                keys.add(k)
                rounds[number].append(index)
                break
        else:
            seen.append({k})
            rounds.append([index])
    return rounds


def _by_position(outcome: BatchResult, keys: list[str]) -> tuple[dict[int, dict], dict[int, ProviderError]]:
    """Map a batch answer back to input positions.

    Results are matched by the objectWriteTraceId we sent (the position), else by id or email.
    Errors name their inputs in `context` (ids, emails or trace ids); an error naming none of
    ours is given to every input that got no result.
    """
    by_key: dict[str, int] = {}
    for position, key in enumerate(keys):
        by_key.setdefault(transform.normalise_email(key), position)

    def position_of(value: Any, *, trace: bool = False) -> int | None:
        text = str(value)
        if trace and text.isdigit() and int(text) < len(keys):
            return int(text)
        return by_key.get(transform.normalise_email(text))

    objects: dict[int, dict] = {}
    for obj in outcome.results:
        position = position_of(obj.get("objectWriteTraceId"), trace=True) if obj.get("objectWriteTraceId") else None
        if position is None:
            position = position_of(obj.get("id"))
        if position is None:
            position = position_of((obj.get("properties") or {}).get("email"))
        if position is not None:
            objects[position] = obj
    errors: dict[int, ProviderError] = {}
    unnamed: list[ProviderError] = []
    for raw in outcome.errors:
        error = classify_item_error(raw)
        named = {
            position
            for name, values in (raw.get("context") or {}).items()
            if isinstance(values, list)
            for value in values
            if (position := position_of(value, trace=name == "objectWriteTraceId")) is not None
        }
        if raw.get("id") and (position := position_of(raw["id"])) is not None:
            named.add(position)
        for position in named:
            errors.setdefault(position, error)
        if not named:
            unnamed.append(error)
    for position in range(len(keys)):
        if unnamed and position not in objects and position not in errors:
            errors[position] = unnamed[0]
    return objects, errors


def _gone_error(external_id: str | None, cause: ProviderError) -> Permanent:
    return Permanent(
        f"HubSpot contact {external_id} no longer exists and the change carries no email to match or "
        f"create it by; push the full contact without its external id ({cause.message})",
        code="OBJECT_NOT_FOUND",
        status=404,
    )


def _when(change: InboundChange) -> datetime:
    return change.occurred_at or _NO_TIME
