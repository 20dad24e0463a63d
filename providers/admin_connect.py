"""The admin's "Connect HubSpot" / "Connect Salesforce" and "Reconnect": OAuth's authorization-code
flow, run from the CRM connections list by staff who may change connections.

`state` is random, kept in the operator's session (with Salesforce's PKCE verifier) and taken out
of it by the callback, so an answer that was not started from this session, or comes a second
time, is refused before its code is used. Whatever happens, the operator lands back on the list
with a message saying what was connected, or why nothing was.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import path, reverse
from django.utils.html import format_html

from crm.registry import provider_class
from providers.connect import Connected, connect_finish, connect_start, oauth_app_missing, oauth_providers
from providers.models import Connection, ConnectionStatus
from syncroot.errors import ApplicationError

logger = logging.getLogger(__name__)

SESSION_KEY = "crm_connect"
STATE_TTL_SECONDS = 15 * 60  # a consent left open longer is started again (the CRMs' codes last 10-15 minutes)
MAX_PENDING = 5  # flows started and not finished, per session (other tabs)


def callback_url(request: HttpRequest, provider: str) -> str:
    """The redirect URL registered with the CRM's app: on PUBLIC_BASE_URL when set."""
    where = reverse("admin:providers_connection_connect_callback", args=[provider])
    base = settings.PUBLIC_BASE_URL
    return f"{base}{where}" if base else request.build_absolute_uri(where)


def _remember(request: HttpRequest, state: str, flow: dict[str, Any]) -> None:
    now = time.time()
    pending = {s: f for s, f in request.session.get(SESSION_KEY, {}).items() if now - f["at"] < STATE_TTL_SECONDS}
    pending[state] = {**flow, "at": now}
    newest = sorted(pending.items(), key=lambda item: item[1]["at"])[-MAX_PENDING:]
    request.session[SESSION_KEY] = dict(newest)


def _take(request: HttpRequest, state: str) -> dict[str, Any] | None:
    """The flow `state` started in this session, once; None when there is none (or it is stale)."""
    pending = dict(request.session.get(SESSION_KEY, {}))
    flow = pending.pop(state, None) if state else None
    request.session[SESSION_KEY] = pending
    if flow is None or time.time() - flow["at"] >= STATE_TTL_SECONDS:
        return None
    return flow


class OAuthConnectMixin:
    """For the ConnectionAdmin: the connect and callback views, the buttons and the Reconnect links."""

    def get_urls(self):
        view = self.admin_site.admin_view  # staff only; the views also need the change permission
        return [
            path("connect/<str:provider>/", view(self.connect_view), name="providers_connection_connect"),
            path(
                "connect/<str:provider>/callback/",
                view(self.connect_callback_view),
                name="providers_connection_connect_callback",
            ),
            *super().get_urls(),
        ]

    def changelist_view(self, request: HttpRequest, extra_context=None):
        buttons = []
        if self.has_change_permission(request):
            buttons = [
                {"kind": kind, "label": provider_class(kind).label, "url": _connect_url(kind)}
                for kind in oauth_providers()
            ]
        return super().changelist_view(request, {**(extra_context or {}), "connect_buttons": buttons})

    @admin.display(description="credentials")
    def reconnect(self, row: Connection) -> str:
        if row.status != ConnectionStatus.AUTH_FAILED or row.provider not in oauth_providers():
            return ""
        return format_html(
            '<a class="reconnect" href="{}?connection={}">Reconnect</a>', _connect_url(row.provider), row.pk
        )

    def connect_view(self, request: HttpRequest, provider: str) -> HttpResponse:
        """Send the operator's browser to the CRM's consent page."""
        self._check(request, provider)
        label = provider_class(provider).label
        wanted = request.GET.get("connection", "")  # a Reconnect link names its connection
        connection = _live_connection(wanted, provider) if wanted else None
        missing = oauth_app_missing(provider)
        if missing or (wanted and connection is None):
            messages.error(request, missing or f"That {label} connection was deleted: use Connect {label}.")
            return _back()
        state = secrets.token_urlsafe(32)
        try:
            authorization = connect_start(provider=provider, redirect_uri=callback_url(request, provider), state=state)
        except ApplicationError as exc:
            messages.error(request, exc.message)
            return _back()
        flow = {"provider": provider, "verifier": authorization.code_verifier, "connection": connection}
        _remember(request, state, flow)
        return HttpResponseRedirect(authorization.url)

    def connect_callback_view(self, request: HttpRequest, provider: str) -> HttpResponse:
        """Where the CRM sends the operator back: with a code, or with an error."""
        self._check(request, provider)
        label = provider_class(provider).label
        answer = request.GET
        flow = _take(request, answer.get("state", ""))
        if flow is None or flow["provider"] != provider:
            logger.warning("connect answer refused: unknown or used state", extra={"provider": provider})
            messages.error(
                request,
                f"{label}: this answer does not belong to a connection started from this session, or it was "
                f"used already; nothing was connected. Use Connect {label} again.",
            )
        elif answer.get("error"):
            messages.error(request, _refusal(label, answer.get("error", ""), answer.get("error_description", "")))
        else:
            self._finish(request, provider, flow, code=answer.get("code", ""))
        return _back()

    def _finish(self, request: HttpRequest, provider: str, flow: dict[str, Any], *, code: str) -> None:
        label = provider_class(provider).label
        connection = Connection.objects.filter(pk=flow["connection"]).first() if flow["connection"] else None
        try:
            done = connect_finish(
                provider=provider, code=code, redirect_uri=callback_url(request, provider),
                code_verifier=flow["verifier"], connection=connection,
            )  # fmt: skip
        except ApplicationError as exc:
            text = exc.message if exc.message.startswith(label) else f"{label}: {exc.message}"
            messages.error(request, f"{text} Nothing was connected.")
            return
        messages.success(request, _done_message(label, done))

    def _check(self, request: HttpRequest, provider: str) -> None:
        if not self.has_change_permission(request):
            raise PermissionDenied
        if provider not in oauth_providers():
            raise Http404(f"No CRM {provider!r} is connected with OAuth.")


def _live_connection(wanted: str, provider: str) -> int | None:
    found = Connection.objects.filter(pk=int(wanted) if wanted.isdigit() else 0, provider=provider).first()
    return found.pk if found is not None and found.deleted_at is None else None


def _connect_url(provider: str) -> str:
    return reverse("admin:providers_connection_connect", args=[provider])


def _back() -> HttpResponseRedirect:
    return HttpResponseRedirect(reverse("admin:providers_connection_changelist"))


def _refusal(label: str, error: str, description: str) -> str:
    if error == "access_denied":
        return f"{label}: access was denied on {label}'s consent page; nothing was connected."
    return f"{label} answered {error}{': ' + description if description else ''}; nothing was connected."


def _done_message(label: str, done: Connected) -> str:
    row = done.connection
    account = f"{label} account {row.account_id}"
    if not done.reconnected:
        return f"Connected {account} as {row.key!r}: every contact is being sent there."
    if row.status == ConnectionStatus.ACTIVE:
        return f"Reconnected {row.key!r} ({account}): sync is active; the changes that waited are being sent."
    return f"Reconnected {row.key!r} ({account}) with new credentials; its sync stays {row.status}."
