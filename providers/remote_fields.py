"""The CRMs' contact fields (their schemas), cached: admins map SyncRoot's fields onto them.

A schema changes when an admin adds or edits a field, rarely; reading it costs one CRM call (a
large describe on Salesforce), so answers are kept in the cache for CRM_SCHEMA_CACHE_SECONDS, per
CRM, and read again on demand (`refresh`). A CRM failure is never a 500: it becomes an API error
that says which CRM failed and how.
"""

import logging
import math
from dataclasses import asdict
from typing import Any

from django.conf import settings
from django.core.cache import cache

from crm.base import AuthExpired, ProviderError, RateLimited, Transient
from crm.registry import get_provider
from syncroot.errors import ApplicationError, NotFound, ServiceUnavailable

logger = logging.getLogger(__name__)

CACHE_VERSION = 1  # bump when the cached shape changes: older entries are then never read


class ProviderNotConnected(NotFound):
    code = "provider_not_connected"


class CrmUnavailable(ServiceUnavailable):
    """The CRM could not answer now (timeout, 5xx, rate limit): worth asking again later."""

    code = "crm_unavailable"


class CrmAuthFailed(ApplicationError):
    """The CRM refused SyncRoot's credentials, even after a refresh: an operator must fix them."""

    status_code = 502
    code = "crm_auth_failed"


class CrmRefused(ApplicationError):
    """The CRM refused the call itself (e.g. the integration user may not read the schema)."""

    status_code = 502
    code = "crm_error"


def _cache_key(provider: str) -> str:
    return f"crm-schema:{provider}"


def remote_field_list(*, provider: str, refresh: bool = False) -> list[dict[str, Any]]:
    """The contact fields of a connected CRM, from the cache unless `refresh` (or expired).

    Each field: name, label, type (SyncRoot's vocabulary), remote_type (the CRM's), length,
    options, writable, custom. Raises ProviderNotConnected, CrmUnavailable, CrmAuthFailed or
    CrmRefused.
    """
    try:
        crm = get_provider(provider)
    except LookupError:
        raise ProviderNotConnected(f"No CRM named {provider!r} is connected.", details={"provider": provider}) from None
    key = _cache_key(provider)
    if not refresh:
        cached = cache.get(key, version=CACHE_VERSION)
        if cached is not None:
            return cached
    try:
        fields = [asdict(remote) for remote in crm.fields()]
    except ProviderError as error:
        raise _api_error(crm.label or provider, provider, error) from error
    cache.set(key, fields, timeout=settings.CRM_SCHEMA_CACHE_SECONDS, version=CACHE_VERSION)
    return fields


def _api_error(label: str, provider: str, error: ProviderError) -> ApplicationError:
    details = {"provider": provider, "crm_code": error.code, "crm_status": error.status}
    logger.warning("crm schema read failed", extra={"provider": provider, "code": error.code, "status": error.status})
    if isinstance(error, AuthExpired):
        return CrmAuthFailed(f"{label} refused SyncRoot's credentials: {error.message}", details=details)
    if isinstance(error, Transient):
        headers = {}
        retry_after = getattr(error, "retry_after", None)
        if isinstance(error, RateLimited) and retry_after:
            headers["Retry-After"] = str(max(1, math.ceil(retry_after)))
        return CrmUnavailable(f"{label} is unavailable: {error.message}", details=details, headers=headers)
    return CrmRefused(f"{label} refused to list its fields: {error.message}", details=details)
