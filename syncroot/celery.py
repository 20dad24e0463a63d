"""The Celery application. Settings live in Django settings under the CELERY_ namespace."""

import functools
import os
from typing import Any

from celery import Celery, signals
from celery.worker.consumer import Consumer
from django.db import close_old_connections

from syncroot import log_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncroot.settings")

app = Celery("syncroot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# JSON logs in the workers too, each line naming its task (and contact and provider when known).
log_context.connect_celery_signals()

# Celery's Django fixup closes every database connection before and after each task: a new
# PostgreSQL connection (and server process) per task, over a fifth of the webhooks worker's time.
# Connections are kept as Django keeps them between requests instead: closed when obsolete
# (CONN_MAX_AGE), broken or left in a transaction, else checked before a task's first query
# (CONN_HEALTH_CHECKS), so a database restarted meanwhile costs no task.
app.conf.CELERY_DB_REUSE_MAX = 10_000  # the fixup's own close, once every 10,000 tasks


def _connections_tidy(task: Any = None, **_: Any) -> None:
    if task is not None and not getattr(task.request, "is_eager", False):  # an eager task is its caller's
        close_old_connections()


signals.task_prerun.connect(_connections_tidy, weak=False)
signals.task_postrun.connect(_connections_tidy, weak=False)


# Seconds between a worker's attempts to reach the broker again. Celery's own 2, 4, 6 … s (up to
# 30) leave a worker idle for up to ~12 s after Redis is back from a 30 s outage.
BROKER_RECONNECT = {"interval_start": 0.5, "interval_step": 0.5, "interval_max": 2.0}


class PromptConsumer(Consumer):
    """Celery's consumer, retrying the broker every 0.5 to 2 s instead of backing off to 30 s
    (CELERY_WORKER_CONSUMER names it)."""

    def ensure_connected(self, conn):
        conn.ensure_connection = functools.partial(conn.ensure_connection, **BROKER_RECONNECT)
        return super().ensure_connected(conn)
