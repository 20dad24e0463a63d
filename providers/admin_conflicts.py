"""The conflict queue in the admin: the same cases and actions as `GET /conflicts` and
`POST /conflicts/{id}/resolve`."""

from django.contrib import admin, messages

from providers import conflicts
from providers.models import Conflict, ConflictStatus
from syncroot.errors import ApplicationError


class ConflictStatusFilter(admin.SimpleListFilter):
    """Open cases by default: the work left."""

    title = "status"
    parameter_name = "status"

    def lookups(self, request, model_admin):
        return [(ConflictStatus.OPEN, "open"), (ConflictStatus.RESOLVED, "resolved"), ("all", "all")]

    def queryset(self, request, queryset):
        value = self.value() or ConflictStatus.OPEN
        return queryset if value == "all" else queryset.filter(status=value)

    def choices(self, changelist):
        current = self.value() or ConflictStatus.OPEN
        for value, label in self.lookup_choices:
            yield {
                "selected": current == value,
                "query_string": changelist.get_query_string({self.parameter_name: value}),
                "display": label,
            }


@admin.register(Conflict)
class ConflictAdmin(admin.ModelAdmin):
    list_display = ("id", "kind", "provider", "contact", "external_id", "field", "message", "status", "action",
                    "opened_at")  # fmt: skip
    list_filter = (ConflictStatusFilter, "kind", "provider")
    search_fields = ("external_id", "message", "contact__email")
    readonly_fields = [f.name for f in Conflict._meta.fields]
    actions = ("keep_syncroot", "keep_crm", "merge", "ignore")

    def changelist_view(self, request, extra_context=None):
        conflicts.conflicts_refresh()  # the queue as the engine holds it now
        return super().changelist_view(request, extra_context)

    def _resolve(self, request, queryset, action: str) -> None:
        done, refused = 0, []
        for pk in queryset.filter(status=ConflictStatus.OPEN).values_list("pk", flat=True):
            try:
                conflicts.conflict_resolve(conflict_id=pk, action=action)
                done += 1
            except ApplicationError as exc:
                refused.append(f"#{pk}: {exc.message}")
        if done:
            messages.success(request, f"{action}: {done} conflict(s) resolved.")
        if refused:
            messages.warning(request, "Not resolved: " + "; ".join(refused[:10]))

    @admin.action(description="Keep SyncRoot's value (sent to the CRM)")
    def keep_syncroot(self, request, queryset):
        self._resolve(request, queryset, conflicts.KEEP_SYNCROOT)

    @admin.action(description="Keep the CRM's value")
    def keep_crm(self, request, queryset):
        self._resolve(request, queryset, conflicts.KEEP_CRM)

    @admin.action(description="Merge (the contacts, or the CRM's duplicate records)")
    def merge(self, request, queryset):
        self._resolve(request, queryset, conflicts.MERGE)

    @admin.action(description="Ignore (close as is)")
    def ignore(self, request, queryset):
        self._resolve(request, queryset, conflicts.IGNORE)

    def has_add_permission(self, request) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False
