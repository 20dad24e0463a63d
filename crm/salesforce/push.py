"""Writing contacts to Salesforce so that a repeated push never duplicates a record.

A linked item (external id known) is updated by id; an unlinked one is first matched by
email (SOQL) and only created when nothing matches, so a push retried after a timeout
finds the record the first attempt created. One item uses the single-record endpoints;
several use sObject Collections (200 per call, allOrNone=false, results by position).

Errors: an answer about a record (400/404, or a per-record failure in a collection) lands
in that item's PushResult; a failure of the call itself (5xx, timeout, quota, auth) marks
the items of that call, and when no item got anywhere the error is raised instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from crm.base import Permanent, ProviderError, PushItem, PushResult
from crm.salesforce.accounts import AccountDirectory, chunk_for_in
from crm.salesforce.client import COLLECTION_SIZE, SalesforceClient
from crm.salesforce.errors import GONE_CODES, details, duplicate_match_id, record_error, transient
from crm.salesforce.transform import COMPANY, INTERNAL_FIELDS, normalize_email, soql_in, to_salesforce

CONTACT_PATH = "sobjects/Contact"


def _record_level(error: ProviderError) -> bool:
    """Whether Salesforce answered about the record (not about the call, the session or the org)."""
    return isinstance(error, Permanent) or error.status in (400, 404)


@dataclass
class _Entry:
    index: int
    item: PushItem
    account_id: str | None = None  # resolved AccountId when the item carries a company
    gone: ProviderError | None = None  # set when the linked record no longer exists

    @property
    def complete(self) -> bool:
        """Whether the item carries every synced field (enough to create the record afresh)."""
        return all(name in self.item.values for name in INTERNAL_FIELDS)

    def body(self, *, creating: bool) -> dict[str, Any]:
        # Mapped custom fields as JSON (numbers, booleans, "YYYY-MM-DD"); None clears one.
        body = {**self.item.remote, **to_salesforce(self.item.values, creating=creating)}
        if COMPANY in self.item.values:
            body["AccountId"] = self.account_id
        return body

    @property
    def email(self) -> str:
        return normalize_email(self.item.values.get("email"))


class ContactPush:
    """One push: `ContactPush(client, accounts, items).run()` → one PushResult per item, in order."""

    def __init__(self, client: SalesforceClient, accounts: AccountDirectory, items: list[PushItem]) -> None:
        self.client = client
        self.accounts = accounts
        self.items = items
        self.results: list[PushResult | None] = [None] * len(items)
        self.call_errors: list[ProviderError] = []

    def run(self) -> list[PushResult]:
        if not self.items:
            return []
        entries = self._resolve_accounts([_Entry(index, item) for index, item in enumerate(self.items)])
        if len(self.items) == 1:
            for entry in entries:
                self._push_one(entry)
        elif entries:
            deletes = [entry for entry in entries if entry.item.delete]
            linked = [entry for entry in entries if not entry.item.delete and entry.item.external_id]
            unlinked = [entry for entry in entries if not entry.item.delete and not entry.item.external_id]
            # Deletions first: a new contact taking a deleted one's email must not match its record.
            self._delete_many(deletes)
            gone = self._update_many(linked, operation="update")
            self._write_unlinked(unlinked + gone)  # a linked record deleted in the CRM is matched or recreated
        results = [
            result or PushResult(self.items[i].key, error=transient("no result", code="BAD_RESPONSE"))
            for i, result in enumerate(self.results)
        ]
        if self.call_errors and all(any(r.error is e for e in self.call_errors) for r in results):
            raise self.call_errors[0]  # nothing reached Salesforce: the whole call failed
        return results

    # --- helpers ---------------------------------------------------------------------------
    def _set(self, entry: _Entry, operation: str, external_id: str | None, error: ProviderError | None = None) -> None:
        if error is not None and error.code == "INVALID_CROSS_REFERENCE_KEY" and entry.account_id:
            # The cached Account was deleted in the CRM: the retry resolves the company afresh.
            self.accounts.forget_id(entry.account_id)
        self.results[entry.index] = PushResult(entry.item.key, external_id, error, operation)

    def _fail_call(self, entries: Iterable[_Entry], error: ProviderError, operation: str) -> None:
        self.call_errors.append(error)
        for entry in entries:
            self._set(entry, operation, entry.item.external_id, error)

    def _resolve_accounts(self, entries: list[_Entry]) -> list[_Entry]:
        """Set each writing entry's AccountId; entries whose company could not be created fail."""
        names = {
            (entry.item.values[COMPANY] or "").strip()
            for entry in entries
            if not entry.item.delete and COMPANY in entry.item.values
        } - {""}
        if not names:
            return entries
        ids, failed = self.accounts.ids_for(names)
        kept = []
        for entry in entries:
            name = "" if entry.item.delete else (entry.item.values.get(COMPANY) or "").strip()
            if name in failed:
                operation = "update" if entry.item.external_id else "create"
                self._set(entry, operation, entry.item.external_id, failed[name])
                continue
            entry.account_id = ids.get(name) if name else None
            kept.append(entry)
        return kept

    def _find_by_email(self, emails: Iterable[str]) -> dict[str, str]:
        """Live Contact id per lower-cased email (the oldest when several share one)."""
        found: dict[str, str] = {}
        for chunk in chunk_for_in(sorted({email for email in emails if email})):
            soql = f"SELECT Id, Email FROM Contact WHERE Email IN {soql_in(chunk)} ORDER BY CreatedDate, Id"
            for record in self.client.query(soql):
                found.setdefault(normalize_email(record.get("Email")), str(record["Id"]))
        return found

    # --- one item: single-record endpoints ------------------------------------------------------
    def _push_one(self, entry: _Entry) -> None:
        item = entry.item
        try:
            if item.delete:
                self._delete_one(entry)
            elif not (item.external_id and self._update_one(entry, item.external_id, "update")):
                self._create_or_match(entry)  # never linked, or the linked record is gone
        except ProviderError as exc:
            if not _record_level(exc):
                raise
            self._set(entry, "delete" if item.delete else "update", item.external_id, exc)

    def _update_one(self, entry: _Entry, record_id: str, operation: str) -> bool:
        """PATCH the fields present; False when the record no longer exists."""
        body = entry.body(creating=False)
        if body:
            try:
                self.client.request("PATCH", f"{CONTACT_PATH}/{record_id}", json=body)
            except Permanent as exc:
                if exc.code in GONE_CODES:
                    entry.gone = entry.gone or exc
                    return False
                raise
        self._set(entry, operation, record_id)
        return True

    def _create_or_match(self, entry: _Entry) -> None:
        match = self._find_by_email([entry.email]).get(entry.email) if entry.email else None
        if match and self._update_one(entry, match, "match"):
            return
        if not self._may_create(entry):
            return
        try:
            answer = self.client.request("POST", CONTACT_PATH, json=entry.body(creating=True))
        except Permanent as exc:
            duplicate = duplicate_match_id(details(exc)) if exc.code == "DUPLICATES_DETECTED" else None
            if not (duplicate and self._update_one(entry, duplicate, "match")):
                self._set(entry, "create", None, exc)
            return
        self._set(entry, "create", str(answer["id"]))

    def _may_create(self, entry: _Entry) -> bool:
        """A record deleted in Salesforce is recreated only from a full state: a partial update
        would create a contact without its other fields (and likely without an email)."""
        if entry.gone is None or entry.complete:
            return True
        error = Permanent(
            f"The linked Salesforce record is gone ({entry.gone.message}); only a full contact can recreate it",
            code=entry.gone.code,
            status=404,  # gone, whichever call said so (a collection answers 200): the caller sends it all
        )
        self._set(entry, "update", entry.item.external_id, error)
        return False

    def _delete_one(self, entry: _Entry) -> None:
        record_id = entry.item.external_id
        if not record_id and entry.email:  # never linked: a create may have landed unseen
            record_id = self._find_by_email([entry.email]).get(entry.email)
        if record_id:
            try:
                self.client.request("DELETE", f"{CONTACT_PATH}/{record_id}")
            except Permanent as exc:
                if exc.code not in GONE_CODES:  # already gone is what we wanted
                    raise
        self._set(entry, "delete", record_id)

    # --- several items: sObject Collections ------------------------------------------------------
    def _update_many(self, entries: list[_Entry], *, operation: str, ids: dict[int, str] | None = None) -> list[_Entry]:
        """Update by id (`ids` overrides the linked id); returns the entries whose record is gone."""
        pending: list[tuple[_Entry, str, dict[str, Any]]] = []
        for entry in entries:
            record_id = (ids or {}).get(entry.index) or entry.item.external_id or ""
            body = entry.body(creating=False)
            if body:
                pending.append((entry, record_id, {"id": record_id, **body}))
            else:
                self._set(entry, operation, record_id)
        gone: list[_Entry] = []
        for start in range(0, len(pending), COLLECTION_SIZE):
            chunk = pending[start : start + COLLECTION_SIZE]
            try:
                answers = self.client.collection_update("Contact", [record for _, _, record in chunk])
            except ProviderError as exc:
                self._fail_call((entry for entry, _, _ in chunk), exc, operation)
                continue
            for (entry, record_id, _), answer in zip(chunk, answers, strict=True):
                error = None if answer.get("success") else record_error(answer.get("errors"))
                if error is not None and error.code in GONE_CODES:
                    entry.gone = entry.gone or error
                    gone.append(entry)
                else:
                    self._set(entry, operation, record_id, error)
        return gone

    def _write_unlinked(self, entries: list[_Entry]) -> None:
        if not entries:
            return
        try:
            matches = self._find_by_email(entry.email for entry in entries)
        except ProviderError as exc:
            self._fail_call(entries, exc, "create")
            return
        matched = {entry.index: matches[entry.email] for entry in entries if entry.email in matches}
        to_match = [entry for entry in entries if entry.index in matched]
        for entry in self._update_many(to_match, operation="match", ids=matched):
            # Deleted between our query and our write: the retry matches again or creates.
            self._set(entry, "match", None, transient("matched record was deleted meanwhile", code="NOT_FOUND"))
        self._create_many([entry for entry in entries if entry.index not in matched])

    def _create_many(self, entries: list[_Entry]) -> None:
        entries = [entry for entry in entries if self._may_create(entry)]
        duplicates: list[_Entry] = []
        for start in range(0, len(entries), COLLECTION_SIZE):
            chunk = entries[start : start + COLLECTION_SIZE]
            try:
                answers = self.client.collection_create("Contact", [entry.body(creating=True) for entry in chunk])
            except ProviderError as exc:
                self._fail_call(chunk, exc, "create")
                continue
            for entry, answer in zip(chunk, answers, strict=True):
                if answer.get("success") and answer.get("id"):
                    self._set(entry, "create", str(answer["id"]))
                    continue
                error = record_error(answer.get("errors"))
                if error.code == "DUPLICATES_DETECTED":
                    duplicates.append(entry)  # collections do not name the match: ask singly
                else:
                    self._set(entry, "create", None, error)
        for entry in duplicates:
            try:
                self._create_or_match(entry)
            except ProviderError as exc:
                self._set(entry, "create", None, exc)

    def _delete_many(self, entries: list[_Entry]) -> None:
        ids = {entry.index: entry.item.external_id or "" for entry in entries}
        unlinked = [entry for entry in entries if not entry.item.external_id]
        if unlinked:
            try:
                matches = self._find_by_email(entry.email for entry in unlinked)
            except ProviderError as exc:
                self._fail_call(unlinked, exc, "delete")
                entries = [entry for entry in entries if entry.item.external_id]
            else:
                ids.update({entry.index: matches.get(entry.email, "") for entry in unlinked})
        targets = []
        for entry in entries:
            if ids[entry.index]:
                targets.append(entry)
            else:
                self._set(entry, "delete", None)  # never reached Salesforce: nothing to delete
        for start in range(0, len(targets), COLLECTION_SIZE):
            chunk = targets[start : start + COLLECTION_SIZE]
            try:
                answers = self.client.collection_delete([ids[entry.index] for entry in chunk])
            except ProviderError as exc:
                self._fail_call(chunk, exc, "delete")
                continue
            for entry, answer in zip(chunk, answers, strict=True):
                error = None if answer.get("success") else record_error(answer.get("errors"))
                if error is not None and error.code in GONE_CODES:
                    error = None  # already deleted: the goal is reached
                self._set(entry, "delete", ids[entry.index], error)
