"""The Celery application. Settings live in Django settings under the CELERY_ namespace."""

import functools
import os

from celery import Celery
from celery.worker.consumer import Consumer

from syncroot import log_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncroot.settings")

app = Celery("syncroot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# JSON logs in the workers too, each line naming its task (and contact and provider when known).
log_context.connect_celery_signals()


# Seconds between a worker's attempts to reach the broker again. Celery's own 2, 4, 6 … s (up to
# 30) leave a worker idle for up to ~12 s after Redis is back from a 30 s outage.
BROKER_RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


class PromptConsumer(Consumer):
    """Celery's consumer, retrying the broker every 0.5 to 2 s instead of backing off to 30 s
    (CELERY_WORKER_CONSUMER names it)."""

    def ensure_connected(self, conn):
        conn.ensure_connection = functools.partial(conn.ensure_connection, **BROKER_RECONNECT)
        return super().ensure_connected(conn)
