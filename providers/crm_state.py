"""The state of each CRM connection: active, or paused because the CRM refused our credentials.

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
from django.db import transaction
from django.utils import timezone

from crm.base import AuthExpired, ProviderError
from crm.registry import connected_providers, get_provider
from providers import services
from providers.models import CrmState, CrmStatus

logger = logging.getLogger(__name__)

PAUSE_REASONS = {CrmStatus.AUTH_FAILED: "auth_failed"}


def crm_paused() -> dict[str, str]:
    """Providers nothing is sent to at the moment, with the reason (`auth_failed`)."""
    rows = CrmState.objects.exclude(status=CrmStatus.ACTIVE).values_list("provider", "status")
    return {provider: PAUSE_REASONS.get(status, status) for provider, status in rows}


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


def _forget_paused() -> None:
    _paused_cache.clear()


def crm_is_paused(*, provider: str) -> bool:
    return CrmState.objects.filter(provider=provider).exclude(status=CrmStatus.ACTIVE).exists()


def crm_states() -> list[CrmState]:
    """One row per connected CRM (created active when missing), for the admin and /metrics."""
    for provider in connected_providers():
        CrmState.objects.get_or_create(provider=provider)
    return list(CrmState.objects.order_by("provider"))


def crm_mark_auth_failed(*, provider: str, error: str) -> bool:
    """Pause the CRM: its credentials were refused. True when it was active until now."""
    now = timezone.now()
    next_probe = now + timedelta(seconds=settings.CRM_PROBE_INTERVAL_SECONDS)
    with transaction.atomic():
        state, _ = CrmState.objects.select_for_update().get_or_create(provider=provider)
        changed = state.status != CrmStatus.AUTH_FAILED
        if changed:
            state.status, state.since, state.next_probe_at = CrmStatus.AUTH_FAILED, now, next_probe
        state.last_error = error[:2000]
        state.save()
    _forget_paused()
    if changed:
        logger.error("CRM credentials refused: sync to this CRM paused", extra={"provider": provider, "error": error})
    return changed


def crm_mark_active(*, provider: str) -> bool:
    """Resume the CRM; what waited for it is drained at once. True when it was paused until now."""
    now = timezone.now()
    with transaction.atomic():
        state, _ = CrmState.objects.select_for_update().get_or_create(provider=provider)
        changed = state.status != CrmStatus.ACTIVE
        state.last_probe_at = now
        if changed:
            state.status, state.since, state.next_probe_at, state.last_error = CrmStatus.ACTIVE, now, None, ""
        state.save()
        if changed:
            transaction.on_commit(lambda: services.enqueue_forward(providers=[provider]), robust=True)
    _forget_paused()
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
    try:
        get_provider(provider).probe()
    except AuthExpired as exc:
        crm_mark_auth_failed(provider=provider, error=str(exc))
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
    CrmState.objects.filter(provider=provider).update(
        last_probe_at=now, next_probe_at=now + timedelta(seconds=settings.CRM_PROBE_INTERVAL_SECONDS)
    )


def crm_probe_paused() -> dict[str, bool]:
    """Beat: probe every paused CRM; {provider: credentials work}."""
    paused = [name for name in crm_paused() if name in connected_providers()]
    return {name: crm_probe(provider=name) for name in paused}
