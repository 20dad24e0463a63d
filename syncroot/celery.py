"""The Celery application. Settings live in Django settings under the CELERY_ namespace."""

import os

from celery import Celery

from syncroot import log_context

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncroot.settings")

app = Celery("syncroot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# JSON logs in the workers too, each line naming its task (and contact and provider when known).
log_context.connect_celery_signals()
