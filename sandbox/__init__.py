"""Local, faithful emulators of the CRM APIs SyncRoot talks to.

``python -m sandbox hubspot|salesforce`` serves one; tests build them with
:func:`create_app` and :func:`sandbox.server.serve` (or the helpers in
:mod:`sandbox.testing`). Each provider module exposes ``DEFAULT_PORT``,
``add_arguments(parser)`` and ``create_app(**options)``; registering a provider
is one line in :data:`PROVIDERS`.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

__all__ = ["PROVIDERS", "create_app", "provider_module"]

#: Provider name → module implementing it.
PROVIDERS: dict[str, str] = {
    "hubspot": "sandbox.hubspot",
    "salesforce": "sandbox.salesforce",
}


def provider_module(kind: str) -> ModuleType:
    """The module implementing sandbox ``kind`` (ValueError for an unknown kind)."""
    try:
        return importlib.import_module(PROVIDERS[kind])
    except KeyError:
        raise ValueError(f"unknown sandbox {kind!r}; known: {', '.join(sorted(PROVIDERS))}") from None


def create_app(kind: str, **options: Any) -> Any:
    """Build the WSGI app of sandbox ``kind`` with config/options (``seed=``, ``webhook_url=``, …)."""
    return provider_module(kind).create_app(**options)
