"""The Celery application. Settings live in Django settings under the CELERY_ namespace."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncroot.settings")

app = Celery("syncroot")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
