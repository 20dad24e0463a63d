"""Connecting a CRM account from the admin with OAuth's authorization-code flow.

The admin keeps the flow's `state` (and Salesforce's PKCE verifier) in the operator's session and
checks it on the way back; here is where the browser is sent, and what the code the CRM sends back
becomes: a new connection (`source` oauth: the refresh token and the app's client id and secret,
stored encrypted, the account asked of the CRM), or new credentials for the connection of that
account when the CRM had refused its credentials (`auth_failed`): reconnected, what waited drains.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import cast

from django.conf import settings

from crm import registry
from crm.base import AuthExpired, Authorization, Grant, OAuthConnect, ProviderError
from crm.registry import PROVIDER_CLASSES, provider_class
from providers.connections import (
    AccountConnected,
    ConnectionInvalid,
    CredentialsRefused,
    CrmUnreachable,
    connection_create,
    connection_update,
    crm_defaults,
)
from providers.models import Connection, ConnectionSource, ConnectionStatus

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Connected:
    connection: Connection
    reconnected: bool  # new credentials for a connection that was there already


def oauth_providers() -> list[str]:
    """The CRMs whose accounts are connected with OAuth from the admin."""
    return [name for name in PROVIDER_CLASSES if issubclass(provider_class(name), OAuthConnect)]


def oauth_app_missing(provider: str) -> str:
    """What the settings lack for `provider`'s OAuth app ("" when nothing)."""
    config = getattr(settings, provider.upper(), {})
    if config.get("client_id") and config.get("client_secret"):
        return ""
    label, prefix = provider_class(provider).label, provider.upper()
    return f"{label}'s OAuth app is not configured: set {prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET."


def connect_start(*, provider: str, redirect_uri: str, state: str) -> Authorization:
    """Where to send the operator's browser to approve SyncRoot's app for an account."""
    return _app(provider).authorization(redirect_uri=redirect_uri, state=state)


def connect_finish(
    *,
    provider: str,
    code: str,
    redirect_uri: str,
    code_verifier: str = "",
    connection: Connection | None = None,
) -> Connected:
    """Exchange the code for the account's credentials and connect the account, or give them to
    `connection` (its Reconnect), or to the connection of that account whose credentials were
    refused. Raises an ApplicationError (nothing is stored then)."""
    if connection is not None and connection.provider != provider:
        raise ConnectionInvalid(f"{connection.key!r} is not a {provider_class(provider).label} connection.")
    grant = _grant(provider=provider, code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
    if connection is not None:
        return Connected(_reconnect(connection, grant), reconnected=True)
    try:
        created = connection_create(
            provider=provider, name="", credentials=grant.credentials, instance_url=grant.instance_url,
            source=ConnectionSource.OAUTH,
        )  # fmt: skip
    except AccountConnected as exc:
        key = (exc.details or {}).get("connection", "")
        existing = Connection.objects.filter(key=key, deleted_at__isnull=True).first() if key else None
        if existing is None or existing.status != ConnectionStatus.AUTH_FAILED:
            raise
        return Connected(_reconnect(existing, grant), reconnected=True)
    return Connected(created, reconnected=False)


def _app(provider: str) -> OAuthConnect:
    """A provider of SyncRoot's own app for this CRM: its client id and secret, no account."""
    if provider not in oauth_providers():
        raise ConnectionInvalid(f"Accounts of {provider!r} are not connected with OAuth.")
    missing = oauth_app_missing(provider)
    if missing:
        raise ConnectionInvalid(missing)
    # oauth_providers() checked that this CRM's provider is an OAuthConnect.
    return cast(OAuthConnect, registry.build_provider(provider=provider, config=crm_defaults(provider), key=provider))


def _grant(*, provider: str, code: str, redirect_uri: str, code_verifier: str) -> Grant:
    label = provider_class(provider).label
    if not code:
        raise ConnectionInvalid(f"{label} sent no authorization code back.")
    try:
        return _app(provider).authorization_grant(code=code, redirect_uri=redirect_uri, code_verifier=code_verifier)
    except AuthExpired as exc:
        raise CredentialsRefused(f"{label} refused the authorization ({exc}).") from None
    except ProviderError as exc:
        raise CrmUnreachable(f"{label} could not be asked for the account's tokens ({exc}).") from None


def _reconnect(connection: Connection, grant: Grant) -> Connection:
    updated = connection_update(
        connection=connection, credentials=grant.credentials, instance_url=grant.instance_url,
        source=ConnectionSource.OAUTH,
    )  # fmt: skip
    logger.info("connection reconnected with OAuth", extra={"provider": updated.key, "status": updated.status})
    return updated
