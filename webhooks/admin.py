"""The inbox in the admin: what each CRM sent, what became of it, and a bulk Reprocess."""

import json

from django.contrib import admin, messages
from django.db import transaction
from django.utils.html import format_html

from syncroot.adminlists import DistinctValuesFilter, ScaledAdmin
from webhooks.models import WebhookEvent
from webhooks.services import event_reprocess


@admin.register(WebhookEvent)
class WebhookEventAdmin(ScaledAdmin):
    list_display = ("received_at", "provider", "event_id", "status", "outcome", "short_error", "attempts",
                    "next_attempt_at", "processed_at")  # fmt: skip
    # By received_at as a list filter (today, past 7 days, …), not a date hierarchy: the hierarchy
    # reads the distinct years of every event on each page load.
    list_filter = (("provider", DistinctValuesFilter), "status", "received_at")
    # Substring search: HubSpot ids read "subscriptionId:eventId" and operators often know one half.
    search_fields = ("event_id",)
    fields = ("provider", "event_id", "status", "outcome", "error", "attempts", "next_attempt_at", "received_at",
              "enqueued_at", "processed_at", "pretty_payload")  # fmt: skip
    readonly_fields = fields
    actions = ("reprocess",)

    @admin.display(description="error")
    def short_error(self, event: WebhookEvent) -> str:
        return event.error[:120]

    @admin.display(description="payload (as received)")
    def pretty_payload(self, event: WebhookEvent) -> str:
        return format_html("<pre>{}</pre>", json.dumps(event.payload, indent=2, sort_keys=True, ensure_ascii=False))

    # A `failed` event spent its WEBHOOK_EVENT_MAX_ATTEMPTS; Reprocess gives it a fresh set.
    @admin.action(description="Reprocess (run through the apply path again)", permissions=["change"])
    def reprocess(self, request, queryset) -> None:
        # One transaction: every event is reset before any is enqueued (the enqueue waits for commit).
        with transaction.atomic():
            ids = list(queryset.values_list("pk", flat=True))
            for pk in ids:
                event_reprocess(event_id=pk)
        messages.success(request, f"Queued {len(ids)} event(s) for reprocessing.")

    def has_add_permission(self, request) -> bool:
        return False
