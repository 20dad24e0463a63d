"""The state of each CRM connection: active, paused by an operator, or paused because the CRM
refused our credentials.

A credential refused even after one refresh (a revoked token, a rotated client secret) is an
outage of that connection, not bad data: the CRM is marked `auth_failed`, the forwarder stops
calling it and its changes wait as they are (pending, attempts not counted, nothing parked). A
light probe (`Provider.probe`) checks the credentials every CRM_PROBE_INTERVAL_SECONDS from beat,
or at once from the admin; when they work again the CRM is active and what waited drains by itself.
"""

import logging
import time
from datetime import timedelta

from django.conf import settings
from django.db import models, transaction
from django.utils import timezone

from crm import registry
from crm.base import AuthExpired, ProviderError
from crm.registry import connected_providers, get_provider
from providers import services
from providers.models import Connection, ConnectionStatus

logger = logging.getLogger(__name__)

PAUSE_REASONS = {ConnectionStatus.AUTH_FAILED: "auth_failed", ConnectionStatus.PAUSED: "paused"}


def crm_paused() -> dict[str, str]:
    """Connections nothing is sent to at the moment, with the reason (`auth_failed`, `paused`)."""
    rows = Connection.objects.filter(status__in=PAUSE_REASONS, deleted_at__isnull=True).values_list("key", "status")
    return {key: PAUSE_REASONS[status] for key, status in rows}


# The API shows a paused CRM on every contact it returns; reading the states once per response
# was a database round trip on every write. Per process, kept API_CRM_STATE_CACHE_SECONDS at most
# (a pause or resume written by this process clears it at once); the forwarder always reads afresh.
_paused_cache: list = []  # [(valid until, paused)] while valid
_clock = time.monotonic


def crm_paused_for_display() -> dict[str, str]:
    """`crm_paused()`, as seen at most API_CRM_STATE_CACHE_SECONDS ago by this process."""
    ttl = settings.API_CRM_STATE_CACHE_SECONDS
    now = _clock()
    if _paused_cache and _paused_cache[0][0] > now:
        return dict(_paused_cache[0][1])
    paused = crm_paused()
    _paused_cache[:] = [(now + ttl, paused)] if ttl > 0 else []
    return dict(paused)


def forget_paused() -> None:
    _paused_cache.clear()


def crm_is_paused(*, provider: str) -> bool:
    return Connection.objects.filter(key=provider).exclude(status=ConnectionStatus.ACTIVE).exists()


def crm_states() -> list[Connection]:
    """The live connections (each connected one has its row, created active when missing)."""
    _ensure_rows()
    return list(Connection.objects.filter(deleted_at__isnull=True).order_by("key"))


def _ensure_rows() -> None:
    missing = set(connected_providers()) - set(Connection.objects.values_list("key", flat=True))
    if missing:
        Connection.objects.bulk_create(
            [_new_row(key) for key in sorted(missing)], ignore_conflicts=True, unique_fields=("key",)
        )


def _new_row(key: str) -> Connection:
    """The row of a connection configured in the environment (the first one of each CRM)."""
    try:
        provider = get_provider(key)
    except LookupError:  # no longer connected: its state is still kept
        return Connection(key=key, provider=key, name=key)
    return Connection(
        key=key, provider=provider.kind, name=provider.label or key, account_id=provider.connected_account
    )


def _row_for_update(key: str) -> Connection:
    try:
        return Connection.objects.select_for_update().get(key=key)
    except Connection.DoesNotExist:
        Connection.objects.bulk_create([_new_row(key)], ignore_conflicts=True, unique_fields=("key",))
        return Connection.objects.select_for_update().get(key=key)


def crm_mark_auth_failed(*, provider: str, error: str, credentials_version: str | None = None) -> bool:
    """Pause the CRM: its credentials were refused. True when it was active until now.

    `credentials_version`: that of the credentials refused (the provider's config). When the
    connection holds others by now (reconnected while this process still used the old ones), the
    refusal says nothing about them: the connection stays as it is, this process builds its
    provider again and what waits is sent again at once.
    """
    now = timezone.now()
    next_probe = now + timedelta(seconds=settings.CRM_PROBE_INTERVAL_SECONDS)
    with transaction.atomic():
        state = _row_for_update(provider)
        replaced = credentials_version is not None and credentials_version != state.credentials_version
        if replaced:
            transaction.on_commit(lambda: services.enqueue_forward(providers=[provider]), robust=True)
        if replaced or state.status in (ConnectionStatus.PAUSED, ConnectionStatus.DISABLED):
            changed = False  # an operator's pause or deletion stands; the credentials are checked on resume
        else:
            changed = state.status != ConnectionStatus.AUTH_FAILED
            if changed:
                state.status, state.since, state.next_probe_at = ConnectionStatus.AUTH_FAILED, now, next_probe
            state.last_error = error[:2000]
            state.save()
    if replaced:
        registry.refresh()
        logger.info("refused credentials were replaced meanwhile: sent again", extra={"provider": provider})
        return False
    forget_paused()
    if changed:
        logger.error("CRM credentials refused: sync to this CRM paused", extra={"provider": provider, "error": error})
    return changed


def crm_mark_active(*, provider: str) -> bool:
    """Resume the CRM; what waited for it is drained at once. True when it was paused until now."""
    now = timezone.now()
    with transaction.atomic():
        state = _row_for_update(provider)
        if state.status in (ConnectionStatus.PAUSED, ConnectionStatus.DISABLED):
            return False  # working credentials do not undo an operator's pause
        changed = state.status != ConnectionStatus.ACTIVE
        state.last_probe_at = now
        if changed:
            state.status, state.since, state.next_probe_at, state.last_error = ConnectionStatus.ACTIVE, now, None, ""
        state.save()
        if changed:
            transaction.on_commit(lambda: services.enqueue_forward(providers=[provider]), robust=True)
    forget_paused()
    if changed:
        logger.info("CRM credentials work again: sync to this CRM resumed", extra={"provider": provider})
    return changed


def crm_probe(*, provider: str) -> bool:
    """Check the CRM's credentials with one cheap authenticated call (outside any transaction).

    Returns whether they work. A refusal keeps (or puts) the CRM in `auth_failed`; any other
    failure (timeout, 5xx) says nothing about the credentials and changes nothing but the times.
    """
    if provider not in connected_providers():
        return False
    crm = get_provider(provider)
    try:
        crm.probe()
    except AuthExpired as exc:
        crm_mark_auth_failed(
            provider=provider, error=str(exc), credentials_version=crm.config.get("credentials_version")
        )
        _probed(provider)
        return False
    except ProviderError as exc:
        logger.warning("CRM probe inconclusive", extra={"provider": provider, "error": str(exc)})
        _probed(provider)
        return False
    crm_mark_active(provider=provider)
    return True


def _probed(provider: str) -> None:
    now = timezone.now()
    Connection.objects.filter(key=provider).update(
        last_probe_at=now, next_probe_at=now + timedelta(seconds=settings.CRM_PROBE_INTERVAL_SECONDS)
    )


def crm_probe_paused() -> dict[str, bool]:
    """Beat: probe every connection whose credentials were refused; {key: credentials work}."""
    refused = [name for name, reason in crm_paused().items() if reason == "auth_failed"]
    connected = set(connected_providers())
    return {name: crm_probe(provider=name) for name in refused if name in connected}


def crm_probe_idle() -> dict[str, bool]:
    """Beat: check the credentials of every active connection not checked for
    CONNECTION_CHECK_INTERVAL_SECONDS, idle ones included: a token is refreshed before it expires
    and a revoked one is found before a change has to wait for it. {key: credentials work}."""
    due = timezone.now() - timedelta(seconds=settings.CONNECTION_CHECK_INTERVAL_SECONDS)
    connected = set(connected_providers())
    keys = Connection.objects.filter(status=ConnectionStatus.ACTIVE, deleted_at__isnull=True).filter(
        models.Q(last_probe_at__isnull=True) | models.Q(last_probe_at__lt=due)
    )
    checked = {}
    for key in keys.filter(key__in=connected).values_list("key", flat=True):
        checked[key] = crm_probe(provider=key)
    return checked
