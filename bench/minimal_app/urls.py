"""The product's URLs, unchanged, plus `POST /bench/minimal-contacts`."""

from django.urls import path

from bench.minimal_app.views import MinimalContactCreate
from syncroot.urls import handler400, handler403, handler404, handler500
from syncroot.urls import urlpatterns as product_urlpatterns

__all__ = ["handler400", "handler403", "handler404", "handler500", "urlpatterns"]

urlpatterns = [
    path("bench/minimal-contacts", MinimalContactCreate.as_view(), name="bench-minimal-contacts"),
    *product_urlpatterns,
]
