from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from syncroot import health, metrics

urlpatterns = [
    path("", include("contacts.urls")),
    path("", include("providers.urls")),
    path("", include("webhooks.urls")),
    path("healthz", health.healthz, name="healthz"),
    path("readyz", health.readyz, name="readyz"),
    path("metrics", metrics.metrics_view, name="metrics"),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("admin/", admin.site.urls),
]

handler400 = "syncroot.errors.handler400"
handler403 = "syncroot.errors.handler403"
handler404 = "syncroot.errors.handler404"
handler500 = "syncroot.errors.handler500"
