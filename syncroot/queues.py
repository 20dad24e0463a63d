"""Celery queue names, in one place: routing, workers, compose and the chart use these."""

from kombu.exceptions import OperationalError as KombuOperationalError
from redis.exceptions import RedisError

FORWARDER = "forwarder"
DLQ = "dlq"
WEBHOOKS_SALESFORCE = "webhooks.salesforce"
WEBHOOKS_HUBSPOT = "webhooks.hubspot"

ALL = (FORWARDER, DLQ, WEBHOOKS_SALESFORCE, WEBHOOKS_HUBSPOT)

# What a publish to an unreachable broker raises (kombu's wrapper, redis-py's own, the socket's).
BROKER_ERRORS = (KombuOperationalError, RedisError, ConnectionError, OSError)
