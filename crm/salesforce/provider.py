"""Salesforce behind the provider interface."""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import secrets
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import requests

from crm.base import (
    Authorization,
    Grant,
    InboundChange,
    OAuthConnect,
    Provider,
    PushItem,
    PushResult,
    RemoteField,
    WebhookEvent,
)
from crm.http import CallRecord
from crm.ratelimit import RateLimiter
from crm.salesforce import lifecycle, schema, webhook
from crm.salesforce.accounts import AccountDirectory
from crm.salesforce.bulk_push import BulkPush
from crm.salesforce.bulk_read import read_records
from crm.salesforce.client import COLLECTION_SIZE, SalesforceClient
from crm.salesforce.inbound import OUTBOUND_FIELDS, event_change, outbound_change, record_change
from crm.salesforce.push import ContactPush
from crm.salesforce.transform import QUERY_FIELDS, soql_datetime, soql_in
from syncroot import queues

logger = logging.getLogger(__name__)

_CONTACT_ID = re.compile(r"^003[0-9A-Za-z]{12}(?:[0-9A-Za-z]{3})?$")
_GENERIC_LOGIN_HOSTS = {"login.salesforce.com", "test.salesforce.com"}


class SalesforceProvider(Provider, OAuthConnect):
    kind = "salesforce"
    label = "Salesforce"
    webhook_queue = queues.WEBHOOKS_SALESFORCE
    batch_size = COLLECTION_SIZE  # sObject Collections

    account_settings = (
        "access_token", "refresh_token", "username", "password", "organization_id", "instance_url",
        "integration_user_id",
    )  # fmt: skip
    account_setting = "organization_id"
    # A My Domain URL serves the org's API and its token endpoint (client credentials need it).
    instance_settings = ("instance_url", "login_url")

    @classmethod
    def same_account(cls, one: str, other: str) -> bool:
        # Ids come in 15- and 18-character forms; the first 15 characters name the org.
        return bool(one) and one[:15] == other[:15]

    @classmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        if config.get("access_token"):
            return True
        if not config.get("client_id"):
            return False
        if config.get("refresh_token") or (config.get("username") and config.get("password")):
            return True
        # Client credentials alone: Salesforce takes them on the org's My Domain only, so the
        # connected app's id and secret on the generic login host (set for the admin's Connect
        # Salesforce) connect no org by themselves.
        login_host = urlsplit(str(config.get("login_url") or "https://login.salesforce.com")).hostname
        return bool(config.get("client_secret")) and login_host not in _GENERIC_LOGIN_HOSTS

    def account_id(self) -> str:
        return self.client.account_id()

    # --- connecting an org with OAuth (this provider built with the connected app's settings) --
    def authorization(self, *, redirect_uri: str, state: str) -> Authorization:
        verifier = secrets.token_urlsafe(64)  # RFC 7636: 43 to 128 characters
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        url = self._app_client().authorize_url(
            scopes=str(self.config.get("scopes") or ""), redirect_uri=redirect_uri, state=state,
            code_challenge=challenge,
        )  # fmt: skip
        return Authorization(url=url, code_verifier=verifier)

    def authorization_grant(self, *, code: str, redirect_uri: str, code_verifier: str = "") -> Grant:
        tokens = self._app_client().exchange_code(code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
        credentials = {
            "refresh_token": str(tokens["refresh_token"]),
            "client_id": str(self.config.get("client_id") or ""),
            "client_secret": str(self.config.get("client_secret") or ""),
        }
        # The org's My Domain: its API, and the token endpoint its refresh token is used at.
        return Grant(credentials=credentials, instance_url=str(tokens.get("instance_url") or "").rstrip("/"))

    def _app_client(self) -> SalesforceClient:
        login_url = self.config.get("oauth_login_url") or self.config.get("login_url")
        config = {**self.config, "login_url": login_url, "access_token": "", "refresh_token": "", "instance_url": ""}
        return SalesforceClient(config, limiter=self.client.limiter, on_response=self.client.on_response)

    def webhook_account(self, payload: Mapping[str, Any]) -> str | None:
        org = payload.get("organization_id")
        return str(org) if org else None

    def __init__(
        self,
        config: Mapping[str, Any],
        *,
        session: requests.Session | None = None,
        limiter: RateLimiter | None = None,
        on_response: Callable[[CallRecord], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.client = SalesforceClient(self.config, session=session, limiter=limiter, on_response=on_response)
        self.accounts = AccountDirectory(self.client)
        fields = self.config.get("outbound_fields")
        self.outbound_fields: tuple[str, ...] = tuple(fields) if fields else OUTBOUND_FIELDS
        # More records than this are read and pushed with Bulk API 2.0 jobs (0: never).
        self.bulk_threshold = int(self.config.get("bulk_threshold") or 0)
        self.bulk_batch_size = int(self.config.get("bulk_batch_size") or 0) if self.bulk_threshold else 0
        self.bulk_external_id_field = str(self.config.get("bulk_external_id_field") or "")

    # --- outbound --------------------------------------------------------------------------
    def push(self, items: list[PushItem]) -> list[PushResult]:
        if self.bulk_threshold and len(items) > self.bulk_threshold:
            return BulkPush(
                self.client, self.accounts, list(items),
                threshold=self.bulk_threshold, external_id_field=self.bulk_external_id_field,
            ).run()  # fmt: skip
        return ContactPush(self.client, self.accounts, list(items)).run()

    def merge_records(self, *, survivor_id: str, loser_id: str) -> str | None:
        return lifecycle.merge(self.client, master_id=survivor_id, loser_id=loser_id)

    def restore_record(self, external_id: str) -> bool:
        return lifecycle.undelete(self.client, external_id)

    def probe(self) -> None:
        self.client.request("GET", "query", params={"q": "SELECT Id FROM Contact LIMIT 1"})

    def fields(self) -> list[RemoteField]:
        return [schema.remote_field(described) for described in schema.describe_contact(self.client)]

    # --- reads -----------------------------------------------------------------------------
    def _change(self, record: Mapping[str, Any], extra: tuple[str, ...] | None = None) -> InboundChange:
        account = record.get("Account")
        if record.get("AccountId") and isinstance(account, Mapping) and account.get("Name"):
            self.accounts.remember(str(record["AccountId"]), str(account["Name"]))
        return record_change(
            record,
            integration_user_id=self.client.integration_user_id,
            account_name=self.accounts.name_for,
            extra=self.extra_fields() if extra is None else extra,
        )

    def _select(self, extra: tuple[str, ...] | None = None) -> str:
        """The SOQL select of every read: the synced fields, the mapped custom ones, the clocks."""
        extra = self.extra_fields() if extra is None else extra
        return f"SELECT {', '.join(dict.fromkeys([*QUERY_FIELDS, *extra]))} FROM Contact"

    def fetch(self, external_ids: list[str], *, extra: tuple[str, ...] | None = None) -> list[InboundChange]:
        """Current state via queryAll, so deleted records come back flagged; ids Salesforce no
        longer knows at all (purged from the recycle bin) are reported deleted too."""
        extra = self.extra_fields() if extra is None else extra  # once, not per record
        wanted = []
        for external_id in dict.fromkeys(external_ids):
            if _CONTACT_ID.match(external_id or ""):
                wanted.append(external_id)
            else:  # a malformed id would fail the whole query; it is no proof of deletion either
                logger.warning("salesforce fetch skips a malformed contact id", extra={"external_id": external_id})
        found: dict[str, Mapping[str, Any]] = {}
        for start in range(0, len(wanted), COLLECTION_SIZE):
            chunk = wanted[start : start + COLLECTION_SIZE]
            for record in self.client.query(
                f"{self._select(extra)} WHERE Id IN {soql_in(chunk)}", include_deleted=True
            ):
                found[str(record["Id"])[:15]] = record
        changes = []
        for external_id in wanted:
            record = found.get(external_id[:15])
            if record is None:
                changes.append(InboundChange(external_id=external_id, deleted=True))
                continue
            change = self._change(record, extra)
            change.external_id = external_id  # the caller's spelling (15 or 18 characters)
            changes.append(change)
        return changes

    def changes_since(self, *, modstamp: datetime | None, last_id: str) -> Iterator[InboundChange]:
        """Changes after (modstamp, last_id), in (SystemModstamp, Id) order, deletions included.

        The query starts at the cursor's whole second (SOQL literals carry no milliseconds) and
        the records sharing the cursor's exact modstamp are skipped up to `last_id` by their
        position in Salesforce's own order; when `last_id` is no longer among them (it changed
        again since) they are all yielded again, which the idempotent apply path absorbs.
        """
        where = f" WHERE SystemModstamp >= {soql_datetime(modstamp)}" if modstamp is not None else ""
        # Read once for the whole read (not per record: each look is a cache round trip), so the
        # records are parsed with the fields the query selected.
        extra = self.extra_fields()
        records = read_records(
            self.client, select=self._select(extra), where=where, threshold=self.bulk_threshold, extra=extra
        )
        tied: list[InboundChange] = []  # records stamped exactly at the cursor
        for record in records:
            change = self._change(record, extra)
            at = change.occurred_at
            if modstamp is not None and at is not None:
                if at < modstamp:
                    continue
                if at == modstamp:
                    tied.append(change)
                    continue
            if tied:
                yield from _after(tied, last_id)
                tied = []
            yield change
        yield from _after(tied, last_id)

    def count_since(self, *, modstamp: datetime | None) -> int | None:
        soql = "SELECT COUNT() FROM Contact"
        if modstamp is not None:
            soql += f" WHERE SystemModstamp >= {soql_datetime(modstamp)}"
        answer = self.client.request("GET", "queryAll", params={"q": soql})
        return int(answer["totalSize"]) if isinstance(answer, dict) and "totalSize" in answer else None

    # --- webhooks --------------------------------------------------------------------------
    def parse_webhook(
        self, *, body: bytes, headers: Mapping[str, str], url: str, query: Mapping[str, str]
    ) -> list[WebhookEvent]:
        return webhook.parse_delivery(body=body, headers=headers, query=query, config=self.config)

    def webhook_change(self, payload: dict[str, Any]) -> InboundChange | None:
        kind = payload.get("kind")
        if kind == webhook.OUTBOUND_MESSAGE:
            return outbound_change(
                payload,
                integration_user_id=self.client.integration_user_id,
                account_name=self.accounts.name_for,
                selected_fields=self.outbound_fields,
                extra=self.extra_fields(),
            )
        if kind == webhook.CHANGE_EVENT:
            header = payload.get("ChangeEventHeader") or {}
            if header.get("entityName") == "Account":  # a renamed or deleted Account: stop trusting the cache
                for account_id in header.get("recordIds") or ():
                    self.accounts.forget_id(str(account_id))
                return None
            return event_change(
                payload,
                integration_user_id=self.client.integration_user_id,
                account_name=self.accounts.name_for,
                extra=self.extra_fields(),
            )
        return None

    def webhook_ack(self, kind: str | None = None) -> tuple[str, bytes]:
        """The ack for a delivery of `kind` (the `payload["kind"]` of its events): Outbound
        Messages need the SOAP `<Ack>true</Ack>`, change events a JSON 2xx. Default: SOAP."""
        return webhook.ack_for(kind)

    def record_url(self, external_id: str) -> str | None:
        template = str(self.config.get("record_url") or "")
        instance_url = self.client.instance_url or str(self.config.get("instance_url") or "")
        if not instance_url and urlsplit(self.client.login_url).hostname not in _GENERIC_LOGIN_HOSTS:
            # client_credentials needs a My Domain login URL, which is the instance URL too: the admin
            # process can link records without ever logging in.
            instance_url = self.client.login_url
        if not template or ("{instance_url}" in template and not instance_url):
            return None
        try:
            return template.format(instance_url=instance_url.rstrip("/"), id=external_id)
        except (KeyError, IndexError, ValueError):
            logger.warning("salesforce record_url template is invalid")
            return None


def _after(tied: list[InboundChange], last_id: str) -> list[InboundChange]:
    """The tied records after `last_id` in Salesforce's order (all of them when it is absent)."""
    for position, change in enumerate(tied):
        if last_id and change.external_id[:15] == last_id[:15]:
            return tied[position + 1 :]
    return tied
