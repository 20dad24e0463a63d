import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

from syncroot.chunked import ChunkedBodyMiddleware

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "syncroot.settings")

application = ChunkedBodyMiddleware(
    get_wsgi_application(), limit=lambda: max(settings.API_MAX_BODY_BYTES, settings.WEBHOOK_MAX_BODY_BYTES)
)
