"""CRM connections as data: which accounts SyncRoot syncs with, added and removed at run time.

Each `Connection` row is one account (a HubSpot portal, a Salesforce org) under a key that names
it everywhere else. The registry builds one provider per live connection from
`connection_specs()`: the environment's settings connect the first account of each CRM (so a
deployment configured with SALESFORCE_* / HUBSPOT_* needs no set-up), the rows add the others
with their own encrypted credentials. Credentials are checked before they are stored: the CRM
is asked which account they reach, and that account may be connected once.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.utils import timezone
from django.utils.text import slugify

from crm import registry
from crm.base import AuthExpired, Provider, ProviderError
from crm.registry import PROVIDER_CLASSES, ConnectionSpec, environment_connections, provider_class
from providers import backfill, crm_state, services
from providers.models import Connection, ConnectionSource, ConnectionStatus
from syncroot.credentials import CredentialsError, credentials_decrypt, credentials_encrypt, credentials_rotate
from syncroot.errors import ApplicationError, Conflict, NotFound

logger = logging.getLogger(__name__)

CREDENTIAL_NAMES = Provider.CREDENTIAL_SETTINGS  # what an account may bring
KEY_LENGTH = Connection._meta.get_field("key").max_length


class ConnectionInvalid(ApplicationError):
    code = "invalid_connection"


class CredentialsRefused(ApplicationError):
    code = "credentials_refused"


class CrmUnreachable(ApplicationError):
    status_code = 502
    code = "crm_unavailable"


class AccountConnected(Conflict):
    code = "account_already_connected"


# --- What the registry builds ----------------------------------------------------------------
def connection_specs() -> list[ConnectionSpec]:
    """The live connections, as the registry builds them (installed in providers/apps.py)."""
    env = environment_connections()
    try:
        rows = {row.key: row for row in Connection.objects.all()}
        missing = [spec for spec in env if spec.key not in rows]
        if missing:  # the first look at a connection configured in the environment
            Connection.objects.bulk_create(
                [_environment_row(spec) for spec in missing], ignore_conflicts=True, unique_fields=("key",)
            )
    except DatabaseError as exc:  # the environment's connections still work without the database
        logger.warning("connections not read: database unavailable", extra={"error": str(exc)})
        return env
    specs = [
        _with_budget(spec, rows.get(spec.key))
        for spec in env
        if spec.key not in rows or _live(rows[spec.key], ConnectionSource.ENVIRONMENT)
    ]
    for row in rows.values():
        if row.source != ConnectionSource.ENVIRONMENT and _live(row, row.source):
            spec = _spec(row)
            if spec is not None:
                specs.append(spec)
    return specs


def _with_budget(spec: ConnectionSpec, row: Connection | None) -> ConnectionSpec:
    """An environment connection with the budget set on its row (PATCH /connections)."""
    if row is None or (row.budget_share is None and row.daily_limit is None):
        return spec
    config = {**spec.config, **_budget_config(row)}
    return replace(spec, config=config, version=repr(config))


def _budget_config(row: Connection) -> dict[str, Any]:
    return {"budget_share": row.budget_share, "daily_limit": row.daily_limit}


def _live(row: Connection, source: str) -> bool:
    return row.source == source and row.deleted_at is None and row.status != ConnectionStatus.DISABLED


def _environment_row(spec: ConnectionSpec) -> Connection:
    crm = provider_class(spec.provider)
    account = str(spec.config.get(crm.account_setting) or "") if crm.account_setting else ""
    return Connection(key=spec.key, provider=spec.provider, name=crm.label or spec.key, account_id=account)


def crm_defaults(provider: str) -> dict[str, Any]:
    """The CRM's settings that every connection to it shares (API version, limits, the app's
    webhook secrets), without the environment's own account and credentials."""
    crm = provider_class(provider)
    return {k: v for k, v in getattr(settings, provider.upper(), {}).items() if k not in crm.account_settings}


def _config(*, provider: str, instance_url: str, account_id: str, credentials: Mapping[str, str]) -> dict[str, Any]:
    crm = provider_class(provider)
    own = crm.connection_config(instance_url=instance_url, account_id=account_id, credentials=credentials)
    return {**crm_defaults(provider), **own}


def _spec(row: Connection) -> ConnectionSpec | None:
    try:
        credentials = json.loads(credentials_decrypt(row.credentials)) if row.credentials else {}
    except (CredentialsError, ValueError) as exc:
        logger.error(
            "connection not built: its credentials cannot be read", extra={"provider": row.key, "error": str(exc)}
        )
        return None
    config = _config(
        provider=row.provider, instance_url=row.instance_url, account_id=row.account_id, credentials=credentials
    )
    config["credentials_version"] = row.credentials_version  # see crm_state.crm_mark_auth_failed
    config.update(_budget_config(row))
    return ConnectionSpec(key=row.key, provider=row.provider, config=config, version=row.updated_at.isoformat())


# --- Services ----------------------------------------------------------------------------------
KEEP = object()  # connection_update: leave the field as it is


def connection_create(
    *,
    provider: str,
    name: str,
    credentials: Mapping[str, Any],
    instance_url: str = "",
    source: str = ConnectionSource.API,
    budget_share: float | None = None,
    daily_limit: int | None = None,
) -> Connection:
    """Check the credentials with the CRM, learn the account they reach, store them encrypted and
    start sending every contact there. `budget_share`, `daily_limit`: its API budget (crm.budget;
    None: the deployment's share, the limit the CRM reports). Raises an ApplicationError."""
    if provider not in PROVIDER_CLASSES:
        raise ConnectionInvalid(
            f"Unknown CRM {provider!r}.", details={"provider": [f"One of: {', '.join(sorted(PROVIDER_CLASSES))}."]}
        )
    secrets = _clean_credentials(credentials)
    account = _discover(provider=provider, instance_url=instance_url, credentials=secrets, key=_key_for(provider, name))
    _refuse_duplicate(provider=provider, account_id=account)
    try:
        with transaction.atomic():
            connection = Connection.objects.create(
                key=_free_key(provider=provider, name=name, account_id=account),
                provider=provider,
                name=name or f"{provider_class(provider).label} {account}".strip(),
                account_id=account,
                instance_url=instance_url,
                source=source,
                credentials=credentials_encrypt(json.dumps(secrets)),
                budget_share=budget_share,
                daily_limit=daily_limit,
            )
            backfill.connection_backfill_start(key=connection.key)
            transaction.on_commit(registry.refresh)
    except IntegrityError:  # the same account connected meanwhile by another request
        raise AccountConnected(
            "This account is already connected.", details={"account_id": account, "provider": provider}
        ) from None
    registry.refresh()  # this process sees the new connection at once
    logger.info("connection added", extra={"provider": connection.key, "account": account})
    return connection


def connection_update(
    *,
    connection: Connection,
    name: str | None = None,
    instance_url: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    source: str | None = None,
    budget_share: float | None | object = KEEP,
    daily_limit: int | None | object = KEEP,
) -> Connection:
    """Rename a connection, give it new credentials (reconnect: they must reach the same
    account), or change its API budget (`budget_share`, `daily_limit`; None: the default). A
    connection paused because its credentials were refused resumes with working ones.
    `source`: where new credentials came from (the admin's OAuth connect); default: the API."""
    if connection.deleted_at is not None:
        raise ConnectionInvalid("This connection was deleted.")
    fields = ["updated_at"]
    if name is not None:
        connection.name, fields = name, [*fields, "name"]
    for field, value in (("budget_share", budget_share), ("daily_limit", daily_limit)):
        if value is not KEEP:
            setattr(connection, field, value)
            fields.append(field)
    if credentials is not None or instance_url is not None:
        url = connection.instance_url if instance_url is None else instance_url
        secrets = _clean_credentials(credentials) if credentials is not None else _stored(connection)
        account = _discover(provider=connection.provider, instance_url=url, credentials=secrets, key=connection.key)
        known = connection.account_id or _learn_account(connection)  # unknown when its credentials stopped working
        if known and not provider_class(connection.provider).same_account(known, account):
            raise ConnectionInvalid(
                "These credentials reach another account; add it as a connection of its own.",
                details={"account_id": account, "connected_account_id": known},
            )
        connection.account_id, connection.instance_url = account, url
        connection.credentials = credentials_encrypt(json.dumps(secrets))
        if source is not None:
            connection.source = source
        elif connection.source == ConnectionSource.ENVIRONMENT:
            connection.source = ConnectionSource.API
        fields += ["account_id", "instance_url", "credentials", "source"]
    connection.save(update_fields=fields)
    registry.refresh()
    if credentials is not None:
        crm_state.crm_mark_active(provider=connection.key)  # reconnected: what waited drains now
        connection.refresh_from_db()
    return connection


def connection_pause(*, connection: Connection) -> Connection:
    """Stop sending to and reading from the CRM; its changes wait as they are, nothing is parked."""
    _set_status(connection, ConnectionStatus.PAUSED, allowed=(ConnectionStatus.ACTIVE, ConnectionStatus.AUTH_FAILED))
    return connection


def connection_resume(*, connection: Connection) -> Connection:
    """Active again: what waited is sent at once (a refusal of the credentials pauses it again)."""
    if _set_status(connection, ConnectionStatus.ACTIVE, allowed=(ConnectionStatus.PAUSED,)):
        transaction.on_commit(lambda: services.enqueue_forward(providers=[connection.key]), robust=True)
    return connection


def connection_delete(*, connection: Connection) -> None:
    """Stop syncing with the account for good: its credentials are forgotten, its links, dead
    letters, attempts and history kept (its key is not given to another connection)."""
    if connection.deleted_at is not None:
        return
    now = timezone.now()
    Connection.objects.filter(pk=connection.pk).update(
        status=ConnectionStatus.DISABLED, since=now, deleted_at=now, credentials="", updated_at=now
    )
    connection.refresh_from_db()
    registry.refresh()
    crm_state.forget_paused()
    logger.info("connection deleted", extra={"provider": connection.key})


def connection_get(*, connection_id: int) -> Connection:
    crm_state.crm_states()  # the environment's connections have their rows
    try:
        return Connection.objects.get(pk=connection_id)
    except Connection.DoesNotExist:
        raise NotFound("No connection with this id.") from None


def connection_list(*, include_deleted: bool = False) -> list[Connection]:
    crm_state.crm_states()
    rows = Connection.objects.order_by("key")
    return list(rows if include_deleted else rows.filter(deleted_at__isnull=True))


def _set_status(connection: Connection, status: str, *, allowed: tuple[str, ...]) -> bool:
    if connection.deleted_at is not None:
        raise ConnectionInvalid("This connection was deleted.")
    now = timezone.now()
    with transaction.atomic():
        changed = Connection.objects.filter(pk=connection.pk, status__in=allowed).update(
            status=status, since=now, updated_at=now
        )
    connection.refresh_from_db()
    registry.refresh()
    crm_state.forget_paused()
    return bool(changed)


def _clean_credentials(credentials: Mapping[str, Any] | None) -> dict[str, str]:
    if not isinstance(credentials, Mapping):
        raise ConnectionInvalid("Credentials are required.", details={"credentials": ["An object is required."]})
    unknown = sorted(set(credentials) - set(CREDENTIAL_NAMES))
    bad = sorted(name for name in CREDENTIAL_NAMES if name in credentials and not isinstance(credentials[name], str))
    if unknown or bad:
        details = {f"credentials.{name}": ["Unknown field."] for name in unknown}
        details |= {f"credentials.{name}": ["A string is required."] for name in bad}
        raise ConnectionInvalid("Invalid credentials.", details=details)
    secrets = {name: value.strip() for name, value in credentials.items() if value.strip()}
    if not (secrets.get("access_token") or secrets.get("refresh_token") or secrets.get("client_secret")):
        raise ConnectionInvalid(
            "Give an access_token, or a refresh_token with the app's client_id and client_secret.",
            details={"credentials": ["access_token or refresh_token is required."]},
        )
    return secrets


def _stored(connection: Connection) -> dict[str, str]:
    if not connection.credentials:
        return {}
    return json.loads(credentials_decrypt(connection.credentials))


def _discover(*, provider: str, instance_url: str, credentials: Mapping[str, str], key: str) -> str:
    """The account the credentials reach, asked of the CRM (outside any transaction)."""
    config = _config(provider=provider, instance_url=instance_url, account_id="", credentials=credentials)
    crm = provider_class(provider)
    if not crm.is_configured(config):
        raise ConnectionInvalid(
            f"These credentials are not enough to connect to {crm.label}.",
            details={
                "credentials": [
                    "A refresh_token needs the app's client_id and client_secret; Salesforce client credentials "
                    "need the org's My Domain as instance_url."
                ]
            },
        )
    try:
        account = registry.build_provider(provider=provider, config=config, key=key).account_id()
    except AuthExpired as exc:
        raise CredentialsRefused(f"{crm.label} refused these credentials: {exc.message}") from None
    except ProviderError as exc:
        raise CrmUnreachable(f"{crm.label} could not be asked which account these credentials reach: {exc}") from None
    if not account:
        raise CrmUnreachable(f"{crm.label} did not say which account these credentials reach.")
    return account


def _refuse_duplicate(*, provider: str, account_id: str) -> None:
    crm = provider_class(provider)
    crm_state.crm_states()  # the environment's connections have their rows
    for row in Connection.objects.filter(provider=provider, deleted_at__isnull=True).order_by("key"):
        if crm.same_account(row.account_id or _learn_account(row), account_id):
            raise AccountConnected(
                f"This account is already connected as {row.key!r}.",
                details={"account_id": account_id, "connection": row.key},
            )


def _learn_account(row: Connection) -> str:
    """The account of a connection made without naming it (the environment's, when HUBSPOT_PORTAL_ID
    or SALESFORCE_ORGANIZATION_ID is not set), asked of the CRM once and kept; "" when it cannot tell."""
    try:
        account = registry.get_provider(row.key).account_id()
    except (LookupError, ProviderError) as exc:
        logger.info("connection's account not learnt", extra={"provider": row.key, "error": str(exc)})
        return ""
    if account:
        Connection.objects.filter(pk=row.pk, account_id="").update(account_id=account)
    return account


def _key_for(provider: str, name: str) -> str:
    return (slugify(name) or provider)[:KEY_LENGTH].strip("-") or provider


def _free_key(*, provider: str, name: str, account_id: str) -> str:
    """A key no connection holds (deleted ones keep theirs: their history names them)."""
    base = _key_for(provider, name) if name else f"{provider}-{slugify(account_id)}"[:KEY_LENGTH]
    # A CRM's own name is kept for the connection the environment configures.
    taken = set(PROVIDER_CLASSES) | set(
        Connection.objects.filter(key__startswith=base[: KEY_LENGTH - 4]).values_list("key", flat=True)
    )
    if base not in taken:
        return base
    for suffix in range(2, 1000):
        key = f"{base[: KEY_LENGTH - len(str(suffix)) - 1]}-{suffix}"
        if key not in taken:
            return key
    raise ConnectionInvalid("No free key for this name; choose another name.")


def connections_rotate_credentials() -> int:
    """Re-encrypt every stored credential under the newest CREDENTIALS_KEYS key (after a key is
    put first), so the old key can be dropped. Returns how many were re-encrypted."""
    done = 0
    for pk, ciphertext in Connection.objects.exclude(credentials="").values_list("pk", "credentials"):
        Connection.objects.filter(pk=pk, credentials=ciphertext).update(credentials=credentials_rotate(ciphertext))
        done += 1
    return done
