from django.db import models


class EventStatus(models.TextChoices):
    RECEIVED = "received"
    PROCESSED = "processed"  # applied to the contact
    IGNORED = "ignored"  # an echo of our own write, stale, or nothing we sync
    FAILED = "failed"


class WebhookEvent(models.Model):
    """The inbox: every CRM event as received, unique per provider so redeliveries are no-ops."""

    provider = models.CharField(max_length=32)
    event_id = models.CharField(max_length=128)
    payload = models.JSONField()
    status = models.CharField(max_length=16, choices=EventStatus.choices, default=EventStatus.RECEIVED)
    outcome = models.CharField(max_length=255, blank=True, default="")
    error = models.TextField(blank=True, default="")
    attempts = models.PositiveIntegerField(default=0)
    received_at = models.DateTimeField(auto_now_add=True, db_index=True)
    processed_at = models.DateTimeField(null=True, blank=True)
    # When the last attempt failed: not before this time again (exponential backoff with jitter).
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    # When it was last handed to the broker and not yet taken off it; cleared by a failed attempt.
    # The sweeper leaves alone what is still queued, so a backlog is not enqueued twice.
    enqueued_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("-received_at",)
        constraints = [models.UniqueConstraint(fields=("provider", "event_id"), name="webhook_event_unique")]
        indexes = [
            # The sweeper's query: events still received, not queued recently. Partial, so it holds
            # only the events in flight, however large the inbox grows.
            models.Index(
                fields=("enqueued_at",), condition=models.Q(status="received"), name="webhook_event_sweep_idx"
            ),
            # The health page: each CRM's last event, and its failed events counted up to a cap.
            models.Index(fields=("provider", "received_at"), name="webhook_event_provider_idx"),
            models.Index(fields=("provider",), condition=models.Q(status="failed"), name="webhook_event_failed_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.event_id} ({self.status})"
