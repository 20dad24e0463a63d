"""The provider interface every CRM sub-package implements, and the errors clients raise.

A provider speaks one CRM: it pushes our contacts (batched), reads the CRM's changes back, and
verifies and parses the CRM's webhooks. Field names crossing this interface are SyncRoot's own
(`contacts.models.SYNCED_FIELDS`); each provider's `transform.py` maps them to the wire.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar


# --- Errors: classified once, in the client, from the CRM's answer -----------------------------
class ProviderError(Exception):
    retryable: ClassVar[bool] = True

    def __init__(self, message: str, *, code: str = "", status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.code = code or self.__class__.__name__.upper()
        self.status = status

    def __str__(self) -> str:
        return f"{self.code}: {self.message}" if self.code else self.message


class Transient(ProviderError):
    """Timeouts, connection errors, 5xx: worth retrying with backoff."""


class RateLimited(Transient):
    def __init__(self, message: str, *, retry_after: float | None = None, code: str = "RATE_LIMITED", status=429):
        super().__init__(message, code=code, status=status)
        self.retry_after = retry_after


class AuthExpired(ProviderError):
    """The token was refused even after one refresh."""


class Permanent(ProviderError):
    """The CRM refused the data itself (validation, duplicates): retrying as is cannot help."""

    retryable = False


# --- What crosses the interface ----------------------------------------------------------------
@dataclass(frozen=True)
class PushItem:
    """One contact's current state to write to a CRM (or a tombstone to delete)."""

    key: Any  # the caller's handle (a link id), echoed back in the result
    values: Mapping[str, str]
    external_id: str | None = None
    delete: bool = False
    # The CRM's own fields beyond the built-ins (mapped custom fields), by the CRM's name: text,
    # numbers, booleans, or None to clear one. The provider writes them as its wire wants.
    remote: Mapping[str, Any] = field(default_factory=dict)
    # A deleted contact merged into another: merge this record into that record of the same CRM
    # (its id here) instead of deleting it, so nothing the record holds is lost there.
    merge_into: str | None = None
    # A restored contact whose record this CRM deleted: bring the record back before writing it.
    restore: bool = False


@dataclass
class PushResult:
    key: Any
    external_id: str | None = None
    error: ProviderError | None = None
    operation: str = "update"  # create | update | delete | match
    # When the CRM applied the write, by its own clock, when its answer says (HubSpot's updatedAt):
    # the echo ledger compares it with the CRM's change times (see providers.inbound._apply_fields).
    written_at: datetime | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class InboundChange:
    """A contact as a CRM reports it: from a webhook, a fetch or the reconciler."""

    external_id: str
    values: dict[str, str] = field(default_factory=dict)  # only the fields the CRM reported
    # The extra fields SyncRoot asked for (`Provider.extra_fields`) as the CRM reported them, by
    # the CRM's name, in JSON types (None: no value); only those the CRM reported.
    remote: dict[str, Any] = field(default_factory=dict)
    remote_times: dict[str, datetime] = field(default_factory=dict)  # per extra field, when known
    occurred_at: datetime | None = None  # when the change happened at the source
    field_times: dict[str, datetime] = field(default_factory=dict)  # per-field times when known
    deleted: bool = False
    from_integration: bool = False  # written by SyncRoot's own integration user/app
    complete: bool = True  # False when values must be fetched from the CRM first
    # The record's lifecycle, when the change is one: merged away into that record of the CRM
    # (deleted with it), records merged into this one, back from the recycle bin, erased for privacy.
    merged_into: str | None = None
    absorbed: tuple[str, ...] = ()
    restored: bool = False
    erased: bool = False


@dataclass
class WebhookEvent:
    """One event parsed out of a verified webhook delivery, ready for the inbox."""

    event_id: str
    payload: dict[str, Any]


# The types every CRM's fields are reported in (each field also keeps the CRM's own name for it).
FIELD_TYPES = ("string", "number", "boolean", "date", "datetime", "enum", "email", "phone", "reference", "id", "other")


@dataclass(frozen=True)
class FieldOption:
    """One allowed value of a picklist/enumeration: what is stored and what people see."""

    value: str
    label: str


@dataclass(frozen=True)
class RemoteField:
    """One field of a CRM's contact object, as its schema API describes it."""

    name: str  # the CRM's API name (`jobtitle`, `Tier__c`)
    label: str
    type: str  # one of FIELD_TYPES
    remote_type: str  # the CRM's own type (`enumeration/select`, `picklist`)
    length: int | None = None  # longest value the CRM keeps, where it has such a limit
    options: tuple[FieldOption, ...] | None = None  # picklists and enumerations only
    writable: bool = True  # SyncRoot's integration may set it on created and updated records
    custom: bool = False  # defined by the CRM's admins, not shipped by the CRM


@dataclass(frozen=True)
class Authorization:
    """Where a person approves SyncRoot's app for one account of a CRM (the authorization-code
    flow's first leg), and the PKCE verifier the app keeps until the CRM sends the person back."""

    url: str
    code_verifier: str = ""


@dataclass(frozen=True)
class Grant:
    """What an authorization code brought: the account's credentials (a refresh token and the
    app's client id and secret) and its API base when it is not the CRM's default one."""

    credentials: Mapping[str, str]
    instance_url: str = ""


class OAuthConnect(ABC):
    """A CRM whose accounts can be connected from the admin with OAuth's authorization-code flow;
    its provider, built with the settings of SyncRoot's app (client id and secret), does both legs."""

    @abstractmethod
    def authorization(self, *, redirect_uri: str, state: str) -> Authorization:
        """The consent page a person is sent to, for this app and `redirect_uri`, carrying `state`."""

    @abstractmethod
    def authorization_grant(self, *, code: str, redirect_uri: str, code_verifier: str = "") -> Grant:
        """Exchange the code the CRM sent back (it works once) for the account's credentials.
        Raises AuthExpired when the CRM refuses the code or the app's credentials, another
        ProviderError when it could not answer."""


class WebhookRejected(Exception):
    def __init__(self, message: str, *, status: int = 400, code: str = "bad_webhook") -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code


def value_text(value: Any) -> str:
    """A value's canonical text: "" for none, `true`/`false`, 40 and 40.0 alike (CRMs differ there)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def value_hash(value: Any) -> str:
    """Hash of a field value as stored in the echo ledger (normalised like comparisons are)."""
    return hashlib.sha256(value_text(value).strip().encode()).hexdigest()[:16]


def field_hash(field: str, value: Any) -> str:
    """`value_hash` for one field: emails compare without case (a case-only edit is no change)."""
    return value_hash((value or "").lower() if field == "email" else value)


# Which of a CRM's fields beyond the built-ins SyncRoot reads (the mapped custom fields), by CRM
# name. The sync engine owns the mappings and installs the answer (`extra_fields_source`), so the
# adapters read exactly what is mapped without depending on the engine.
_extra_fields: Callable[[str], tuple[str, ...]] = lambda name: ()  # noqa: E731


def extra_fields_source(source: Callable[[str], tuple[str, ...]]) -> None:
    global _extra_fields
    _extra_fields = source


class Provider(ABC):
    """Base class; see crm/hubspot and crm/salesforce."""

    kind: ClassVar[str]  # the CRM, a key of crm.registry.PROVIDER_CLASSES
    label: ClassVar[str] = ""  # how people write the CRM's name, for messages ("HubSpot")
    webhook_queue: ClassVar[str]
    batch_size: ClassVar[int]
    # A CRM with a bulk API: past `bulk_threshold` records waiting, a drain takes up to
    # `bulk_batch_size` at once and `push` sends them as one bulk job (0: no bulk API).
    bulk_threshold: int = 0
    bulk_batch_size: int = 0

    # Settings that belong to one account (its credentials and ids), not to every connection to
    # the CRM: a connection made through the API or the admin brings its own.
    account_settings: ClassVar[tuple[str, ...]] = ()
    account_setting: ClassVar[str] = ""  # the one holding the account id (`portal_id`)

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.config = dict(config)
        # The connection's key: what links, cursors and metrics name it by (the CRM's own name
        # for the connection configured from the environment).
        self.name: str = str(config.get("connection") or self.kind)

    # The credentials an account brings, and the settings its API base goes into.
    CREDENTIAL_SETTINGS: ClassVar[tuple[str, ...]] = ("access_token", "refresh_token", "client_id", "client_secret")
    instance_settings: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def connection_config(cls, *, instance_url: str, account_id: str, credentials: Mapping[str, str]) -> dict:
        """The config settings of one account: its id, its API base (when not the CRM's default
        one) and the credentials it was given."""
        config: dict[str, Any] = {cls.account_setting: account_id} if cls.account_setting else {}
        if instance_url:
            config.update(dict.fromkeys(cls.instance_settings, instance_url))
        config.update({name: credentials[name] for name in cls.CREDENTIAL_SETTINGS if credentials.get(name)})
        return config

    @abstractmethod
    def account_id(self) -> str:
        """The account these credentials reach (HubSpot portal id, Salesforce org id), asked of the
        CRM. Raises AuthExpired when the credentials are refused."""

    @property
    def connected_account(self) -> str:
        """The account id this connection was made for ("" when not known)."""
        return str(self.config.get(self.account_setting) or "") if self.account_setting else ""

    @classmethod
    def same_account(cls, one: str, other: str) -> bool:
        return bool(one) and one == other

    def webhook_account(self, payload: Mapping[str, Any]) -> str | None:
        """The account an inbox event comes from, when the delivery says (routing between the
        connections of one CRM); None when it does not."""
        return None

    @classmethod
    @abstractmethod
    def is_configured(cls, config: Mapping[str, Any]) -> bool:
        """Whether the settings hold enough credentials to connect."""

    @abstractmethod
    def push(self, items: list[PushItem]) -> list[PushResult]:
        """Write items, batched where the CRM allows; per-item failures come back in results.

        Raises a ProviderError when the whole call failed (nothing known to be written).
        """

    @abstractmethod
    def probe(self) -> None:
        """One cheap authenticated call (refreshing the token once if need be), to learn whether
        the credentials work. Raises AuthExpired when they are refused, another ProviderError when
        the CRM could not tell (timeout, 5xx)."""

    @abstractmethod
    def fetch(self, external_ids: list[str], *, extra: tuple[str, ...] | None = None) -> list[InboundChange]:
        """Current state of the given records (deleted ones flagged); `extra`: the custom fields
        to read instead of `extra_fields()`."""

    @abstractmethod
    def changes_since(self, *, modstamp: datetime | None, last_id: str) -> Iterator[InboundChange]:
        """Every change after the compound cursor, oldest first (for the reconciler)."""

    @abstractmethod
    def parse_webhook(self, *, body: bytes, headers: Mapping[str, str], url: str, query: Mapping[str, str]):
        """Verify a delivery and split it into events; raises WebhookRejected."""

    @abstractmethod
    def webhook_change(self, payload: dict[str, Any]) -> InboundChange | None:
        """Turn one stored inbox payload into a change (None when it concerns nothing we sync)."""

    def extra_fields(self) -> tuple[str, ...]:
        """The CRM fields beyond the built-ins every read asks for (see `extra_fields_source`)."""
        return _extra_fields(self.name)

    @abstractmethod
    def fields(self) -> list[RemoteField]:
        """The contact object's fields, built-in and custom, read from the CRM's schema API (one
        or a few calls: callers cache the answer)."""

    def webhook_ack(self, kind: str | None = None) -> tuple[str, bytes]:
        """Content type and body that tell the CRM a delivery was stored (it redelivers otherwise).

        `kind`: the `payload["kind"]` the parser wrote into the delivery's events, for a CRM whose
        acknowledgement differs per kind of delivery."""
        return "application/json", b'{"status":"ok"}'

    def merge_records(self, *, survivor_id: str, loser_id: str) -> str | None:
        """Merge record `loser_id` into `survivor_id` as the CRM's own merge does; the survivor's id
        (a CRM may give it a new one). A loser gone already is merged. None when no merge was made (the
        CRM has no merge, or a person deleted the survivor's record there): the caller deletes instead."""
        return None

    def restore_record(self, external_id: str) -> bool:
        """Bring a deleted record back with its id; False when the CRM cannot (it is then created
        again)."""
        return False

    def count_since(self, *, modstamp: datetime | None) -> int | None:
        """How many records `changes_since` would return, when one cheap call can tell (progress
        bars); None when it cannot."""
        return None

    def record_url(self, external_id: str) -> str | None:
        return None
