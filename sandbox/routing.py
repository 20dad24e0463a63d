"""A tiny router: ``METHOD /path/{param}`` patterns compiled once at registration.

Static paths are looked up in a dict; patterns with placeholders are tried in
registration order with a pre-compiled regex. A ``{param}`` matches one path
segment; the match is percent-decoded by werkzeug already (``request.path``).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Route", "Router"]

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class Route:
    """One registered route.

    ``key`` is ``"METHOD /pattern"`` (the stats key); ``auth`` tells the
    provider's ``guard`` whether the route needs credentials; ``tags`` carries
    any provider-specific flags (e.g. ``{"search"}`` for a separate limit).
    """

    method: str
    pattern: str
    handler: Callable[..., Any]
    auth: bool = True
    tags: frozenset[str] = field(default_factory=frozenset)

    @property
    def key(self) -> str:
        return f"{self.method} {self.pattern}"


class Router:
    """Maps (method, path) to a :class:`Route` and its path parameters."""

    def __init__(self) -> None:
        self._static: dict[str, dict[str, Route]] = {}
        self._dynamic: list[tuple[re.Pattern[str], dict[str, Route]]] = []
        self._dynamic_index: dict[str, dict[str, Route]] = {}

    def add(
        self,
        method: str,
        pattern: str,
        handler: Callable[..., Any],
        *,
        auth: bool = True,
        tags: frozenset[str] | set[str] = frozenset(),
    ) -> Route:
        """Register ``handler`` for ``method`` + ``pattern`` (e.g. ``/contacts/{id}``)."""
        route = Route(method.upper(), pattern, handler, auth, frozenset(tags))
        if "{" not in pattern:
            self._static.setdefault(pattern, {})[route.method] = route
            return route
        methods = self._dynamic_index.get(pattern)
        if methods is None:
            regex = re.compile(
                "^"
                + _PLACEHOLDER.sub(r"(?P<\1>[^/]+)", re.escape(pattern).replace(r"\{", "{").replace(r"\}", "}"))
                + "$"
            )
            methods = self._dynamic_index[pattern] = {}
            self._dynamic.append((regex, methods))
        methods[route.method] = route
        return route

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | list[str]:
        """``(route, params)`` on a match; otherwise the list of methods the path
        allows (empty: no such path → 404; non-empty → 405)."""
        allowed: list[str] = []
        methods = self._static.get(path)
        if methods is not None:
            route = methods.get(method)
            if route is not None:
                return route, {}
            allowed.extend(methods)
        # A static path that lacks the method may still match a pattern
        # (``GET /contacts/search`` reads the contact whose id is "search").
        for regex, methods in self._dynamic:
            found = regex.match(path)
            if found is not None:
                route = methods.get(method)
                if route is not None:
                    return route, found.groupdict()
                allowed.extend(methods)
        return sorted(set(allowed))
