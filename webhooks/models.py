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

    class Meta:
        ordering = ("-received_at",)
        constraints = [models.UniqueConstraint(fields=("provider", "event_id"), name="webhook_event_unique")]
        indexes = [
            models.Index(
                fields=("received_at",), condition=models.Q(status="received"), name="webhook_event_pending_idx"
            )
        ]

    def __str__(self) -> str:
        return f"{self.provider}:{self.event_id} ({self.status})"
