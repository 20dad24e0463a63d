"""Celery queue names, in one place: routing, workers, compose and the chart use these."""

FORWARDER = "forwarder"
DLQ = "dlq"
WEBHOOKS_SALESFORCE = "webhooks.salesforce"
WEBHOOKS_HUBSPOT = "webhooks.hubspot"

ALL = (FORWARDER, DLQ, WEBHOOKS_SALESFORCE, WEBHOOKS_HUBSPOT)
