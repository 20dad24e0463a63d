"""Pushing thousands of contacts to Salesforce with Bulk API 2.0 jobs instead of Collections.

The same push as `ContactPush` (deletions first, linked records updated by id, unlinked ones
matched by email, then created), where the many-record steps become one ingest job each:
updates by `Id`, creations as an upsert on the external id field (`SALESFORCE_BULK_EXTERNAL_ID_FIELD`,
holding SyncRoot's key of the contact's link), so a job retried after a crash finds the records
its first run created instead of creating them twice. Each refused record fails alone with
Salesforce's own code and message; nothing is cut or changed to fit. An org without the external
id field gets the Collections push instead.
"""

from __future__ import annotations

import logging
from typing import Any

from crm.base import Permanent, ProviderError, PushItem
from crm.salesforce.accounts import AccountDirectory
from crm.salesforce.bulk import BulkJobs, IngestResult
from crm.salesforce.client import SalesforceClient
from crm.salesforce.errors import GONE_CODES, transient
from crm.salesforce.push import ContactPush, _Entry

logger = logging.getLogger(__name__)


def _columns(rows: list[dict[str, Any]]) -> list[str]:
    return list(dict.fromkeys(name for row in rows for name in row))


class BulkPush(ContactPush):
    def __init__(
        self,
        client: SalesforceClient,
        accounts: AccountDirectory,
        items: list[PushItem],
        *,
        threshold: int,
        external_id_field: str,
    ) -> None:
        super().__init__(client, accounts, items)
        self.threshold = threshold
        self.external_id_field = external_id_field
        self.bulk = BulkJobs(client)

    def _not_processed(self, entry: _Entry, operation: str) -> None:
        error = transient("the Bulk job did not process this record", code="BULK_UNPROCESSED")
        self._set(entry, operation, entry.item.external_id, error)

    def _update_many(self, entries: list[_Entry], *, operation: str, ids: dict[int, str] | None = None) -> list[_Entry]:
        if len(entries) <= self.threshold:
            return super()._update_many(entries, operation=operation, ids=ids)
        rows: list[dict[str, Any]] = []
        by_id: dict[str, _Entry] = {}
        for entry in entries:
            record_id = (ids or {}).get(entry.index) or entry.item.external_id or ""
            body = entry.body(creating=False)
            if not body:
                self._set(entry, operation, record_id)
                continue
            rows.append({"Id": record_id, **body})
            by_id[record_id] = entry
        if not rows:
            return []
        try:
            result = self.bulk.ingest(operation="update", columns=_columns(rows), rows=rows, key="Id")
        except ProviderError as exc:
            self._fail_call(by_id.values(), exc, operation)
            return []
        gone: list[_Entry] = []
        for record_id, entry in by_id.items():
            error = result.failed.get(record_id)
            if record_id in result.succeeded:
                self._set(entry, operation, record_id)
            elif error is not None and error.code in GONE_CODES:
                entry.gone = entry.gone or error
                gone.append(entry)
            elif error is not None:
                self._set(entry, operation, record_id, error)
            else:
                self._not_processed(entry, operation)
        return gone

    def _create_many(self, entries: list[_Entry]) -> None:
        entries = [entry for entry in entries if self._may_create(entry)]
        if len(entries) <= self.threshold or not self.external_id_field:
            super()._create_many(entries)
            return
        field = self.external_id_field
        by_key = {str(entry.item.key): entry for entry in entries}
        rows = [{field: key, **entry.body(creating=True)} for key, entry in by_key.items()]
        try:
            result = self.bulk.ingest(
                operation="upsert", columns=_columns(rows), rows=rows, key=field, external_id_field=field
            )
        except Permanent as exc:
            # The org refused the job itself (no such external id field): Collections do it.
            logger.warning("salesforce bulk upsert refused; pushing with Collections", extra={"error": str(exc)})
            super()._create_many(entries)
            return
        except ProviderError as exc:
            self._fail_call(entries, exc, "create")
            return
        self._record_creates(by_key, result)

    def _record_creates(self, by_key: dict[str, _Entry], result: IngestResult) -> None:
        duplicates: list[_Entry] = []
        for key, entry in by_key.items():
            if key in result.succeeded:
                record_id, created = result.succeeded[key]
                self._set(entry, "create" if created else "match", record_id)
            elif key in result.failed:
                error = result.failed[key]
                if error.code == "DUPLICATES_DETECTED":
                    duplicates.append(entry)  # a duplicate rule names the match only to a single create
                else:
                    self._set(entry, "create", None, error)
            else:
                self._not_processed(entry, "create")
        for entry in duplicates:
            try:
                self._create_or_match(entry)
            except ProviderError as exc:
                self._set(entry, "create", None, exc)
