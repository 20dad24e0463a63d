"""The admin's CRM connections: each account's state, pause, resume, delete, check credentials, and
connecting (or reconnecting) an account with OAuth (providers/admin_connect.py)."""

from collections.abc import Callable

from django.contrib import admin, messages
from django.http import HttpRequest
from django.utils import timezone

from providers import connections, crm_state
from providers.admin_connect import OAuthConnectMixin
from providers.budgets import connection_budget
from providers.health_admin import budget_text
from providers.models import Connection


@admin.register(Connection)
class ConnectionAdmin(OAuthConnectMixin, admin.ModelAdmin):
    """Each CRM account SyncRoot syncs with: active, paused, or paused because the CRM refused
    our credentials. Credentials are never shown."""

    list_display = (
        "key", "name", "provider", "account_id", "status", "since", "short_error", "last_probe_at", "reconnect",
    )  # fmt: skip
    list_filter = ("provider", "status")
    fields = ("key", "name", "provider", "account_id", "instance_url", "source", "status", "since", "last_error",
              "last_probe_at", "next_probe_at", "budget_share", "daily_limit", "api_budget", "created_at",
              "deleted_at")  # fmt: skip
    readonly_fields = tuple(f for f in fields if f not in ("name", "budget_share", "daily_limit"))
    actions = ("check_credentials", "pause", "resume", "delete_connections")

    def get_queryset(self, request):
        crm_state.crm_states()  # every connection configured in the environment has its row
        return super().get_queryset(request)

    def get_actions(self, request):
        actions = super().get_actions(request)
        actions.pop("delete_selected", None)  # deleting keeps the history: `delete_connections`
        return actions

    @admin.display(description="last error")
    def short_error(self, state: Connection) -> str:
        return state.last_error[:120]

    @admin.display(description="API calls, last 24 h")
    def api_budget(self, state: Connection) -> str:
        return budget_text(connection_budget(connection=state), timezone.now())

    @admin.action(description="Check credentials now")
    def check_credentials(self, request: HttpRequest, queryset) -> None:
        for key in queryset.filter(deleted_at__isnull=True).values_list("key", flat=True):
            if crm_state.crm_probe(provider=key):
                messages.success(request, f"{key}: the credentials work; sync is active.")
            else:
                state = Connection.objects.get(key=key)
                detail = state.last_error[:200] or "not connected"
                messages.error(request, f"{key}: not confirmed ({detail}); sync stays {state.status}.")

    @admin.action(description="Pause sync")
    def pause(self, request: HttpRequest, queryset) -> None:
        _each_live(request, queryset, connections.connection_pause)

    @admin.action(description="Resume sync")
    def resume(self, request: HttpRequest, queryset) -> None:
        _each_live(request, queryset, connections.connection_resume)

    @admin.action(description="Delete (stop syncing, keep the history)")
    def delete_connections(self, request: HttpRequest, queryset) -> None:
        _each_live(request, queryset, connections.connection_delete, done="deleted; its links and history are kept")

    def save_model(self, request, obj, form, change) -> None:
        connections.connection_update(
            connection=obj, name=obj.name, budget_share=obj.budget_share, daily_limit=obj.daily_limit
        )

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def _each_live(request: HttpRequest, queryset, change: Callable[..., object], *, done: str = "") -> None:
    """Apply one connection service to each selected connection not deleted, and say the outcome."""
    for connection in queryset.filter(deleted_at__isnull=True):
        change(connection=connection)
        messages.success(request, f"{connection.key}: {done or connection.status}.")
