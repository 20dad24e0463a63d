from django.contrib import admin, messages
from django.utils.html import format_html

from providers import outbox
from providers.models import DeadLetter, ProviderLink, SyncAttempt, SyncCursor
from providers.registry import connected_providers, get_provider


def _record_link(provider: str, external_id: str | None) -> str:
    if not external_id:
        return "—"
    url = get_provider(provider).record_url(external_id) if provider in connected_providers() else None
    return format_html('<a href="{}" target="_blank" rel="noopener">{}</a>', url, external_id) if url else external_id


@admin.register(DeadLetter)
class DeadLetterAdmin(admin.ModelAdmin):
    list_display = ("created_at", "provider", "contact", "error_code", "short_message", "attempts", "status")
    list_filter = ("provider", "status", "error_code")
    search_fields = ("contact__email", "error_code", "error_message")
    readonly_fields = [f.name for f in DeadLetter._meta.fields]
    actions = ("retry_now", "discard")
    list_select_related = ("contact",)

    @admin.display(description="message")
    def short_message(self, letter: DeadLetter) -> str:
        return letter.error_message[:120]

    @admin.action(description="Retry now (sends the contact's current state)")
    def retry_now(self, request, queryset):
        retried = sum(outbox.dead_letter_retry(dead_letter_id=pk) for pk in queryset.values_list("pk", flat=True))
        messages.success(request, f"Queued {retried} dead letter(s) for another attempt.")

    @admin.action(description="Discard")
    def discard(self, request, queryset):
        discarded = sum(outbox.dead_letter_discard(dead_letter_id=pk) for pk in queryset.values_list("pk", flat=True))
        messages.success(request, f"Discarded {discarded} dead letter(s).")

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SyncAttempt)
class SyncAttemptAdmin(admin.ModelAdmin):
    list_display = ("created_at", "provider", "contact", "operation", "outcome", "error_code", "batch_size")
    list_filter = ("provider", "outcome", "operation", "error_code")
    search_fields = ("contact__email", "error_code", "message")
    readonly_fields = [f.name for f in SyncAttempt._meta.fields]
    list_select_related = ("contact",)

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(SyncCursor)
class SyncCursorAdmin(admin.ModelAdmin):
    """Where each reconciler (and backfill checkpoint) stands, and the last change it had to skip."""

    list_display = ("provider", "modstamp", "updated_at", "failed_count", "last_error_at", "short_error")
    readonly_fields = [f.name for f in SyncCursor._meta.fields]

    @admin.display(description="last error")
    def short_error(self, cursor: SyncCursor) -> str:
        return cursor.last_error[:120]

    def has_add_permission(self, request) -> bool:
        return False


class ProviderLinkInline(admin.TabularInline):
    model = ProviderLink
    extra = 0
    can_delete = False
    fields = ("provider", "crm_record", "status", "synced_version", "attempts", "next_attempt_at", "last_error_code",
              "last_error", "synced_at")  # fmt: skip
    readonly_fields = fields

    @admin.display(description="external id")
    def crm_record(self, link: ProviderLink) -> str:
        return _record_link(link.provider, link.external_id)

    def has_add_permission(self, request, obj=None) -> bool:
        return False


class SyncAttemptInline(admin.TabularInline):
    model = SyncAttempt
    extra = 0
    can_delete = False
    fields = ("created_at", "provider", "contact_version", "operation", "outcome", "error_code", "message")
    readonly_fields = fields
    ordering = ("-created_at",)
    max_num = 0
    verbose_name_plural = "sync history"

    def get_queryset(self, request):
        return super().get_queryset(request).order_by("-created_at")
