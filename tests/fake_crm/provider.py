"""The fake CRM's adapter: push, fetch, changes, probe and signed JSON webhooks over a dict."""

from __future__ import annotations

import hmac
import itertools
import json
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from crm.base import (
    AuthExpired,
    InboundChange,
    Provider,
    PushItem,
    PushResult,
    RemoteField,
    WebhookEvent,
    WebhookRejected,
)

SIGNATURE_HEADER = "X-Fake-Signature"


class FakeStore:
    """The CRM's side: its records and its clock, shared by the adapter and the test."""

    def __init__(self) -> None:
        self.records: dict[str, dict[str, Any]] = {}
        self.ids = itertools.count(1)
        self.calls: list[str] = []
        self.refuse_credentials = False
        self.after_write: Callable[[], None] | None = None  # runs once, as the write lands (races)

    def save(self, record_id: str, values: Mapping[str, str]) -> dict[str, Any]:
        record = self.records.setdefault(record_id, {"id": record_id, "values": {}, "deleted": False})
        record["values"].update(values)
        record["modified"] = datetime.now(UTC)
        return record


STORE = FakeStore()


class FakeCrm(Provider):
    kind = "fakecrm"
    label = "FakeCRM"
    webhook_queue = "webhooks.fakecrm"
    batch_size = 50

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        return bool(config.get("secret"))

    def _call(self, operation: str) -> None:
        STORE.calls.append(operation)
        if STORE.refuse_credentials:
            raise AuthExpired("FakeCRM refused the credentials", code="INVALID_TOKEN", status=401)

    def push(self, items: list[PushItem]) -> list[PushResult]:
        self._call("push")
        results = []
        for item in items:
            if item.delete:
                STORE.records[str(item.external_id)]["deleted"] = True
                results.append(PushResult(key=item.key, external_id=item.external_id, operation="delete"))
                continue
            record_id, operation = item.external_id, "update"
            if record_id is None:
                email = item.values.get("email", "").lower()
                match = next((r for r in STORE.records.values() if r["values"].get("email", "").lower() == email), None)
                record_id, operation = (match["id"], "match") if match else (str(next(STORE.ids)), "create")
            STORE.save(record_id, item.values)
            results.append(PushResult(key=item.key, external_id=record_id, operation=operation))
        if STORE.after_write is not None:
            meanwhile, STORE.after_write = STORE.after_write, None
            meanwhile()
        return results

    def account_id(self) -> str:
        self._call("account")
        return str(self.config.get("account_id") or "fake-account")

    def probe(self) -> None:
        self._call("probe")

    def fields(self) -> list[RemoteField]:
        self._call("fields")
        return [
            RemoteField(name, name.title(), "email" if name == "email" else "string", "text", length=255)
            for name in ("email", "first_name", "last_name", "phone", "company", "title")
        ]

    def fetch(self, external_ids: list[str], *, extra: tuple[str, ...] | None = None) -> list[InboundChange]:
        self._call("fetch")
        return [self._change(STORE.records[i]) for i in external_ids if i in STORE.records]

    def changes_since(self, *, modstamp: datetime | None, last_id: str) -> Iterator[InboundChange]:
        self._call("changes")
        for record in sorted(STORE.records.values(), key=lambda r: (r["modified"], r["id"])):
            if modstamp is None or record["modified"] >= modstamp:
                yield self._change(record)

    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str], url: str, query: Mapping[str, str]):
        expected = hmac.new(str(self.config["secret"]).encode(), body, "sha256").hexdigest()
        if not hmac.compare_digest(headers.get(SIGNATURE_HEADER, ""), expected):
            raise WebhookRejected("bad signature", status=401, code="invalid_signature")
        events = json.loads(body)
        return [WebhookEvent(event_id=str(event["event_id"]), payload=event) for event in events]

    def webhook_change(self, payload: dict[str, Any]) -> InboundChange | None:
        occurred = datetime.fromisoformat(payload["occurred_at"])
        return InboundChange(
            external_id=str(payload["id"]), values=dict(payload.get("values") or {}), occurred_at=occurred,
            deleted=bool(payload.get("deleted")), field_times={f: occurred for f in payload.get("values") or {}},
        )  # fmt: skip

    @staticmethod
    def _change(record: dict[str, Any]) -> InboundChange:
        return InboundChange(
            external_id=record["id"], values=dict(record["values"]), occurred_at=record["modified"],
            deleted=record["deleted"],
        )  # fmt: skip
