from django.urls import path

from providers.views import MappingDetailView, MappingListView, MappingPreviewView, RemoteFieldListView

urlpatterns = [
    path("providers/<str:provider>/fields", RemoteFieldListView.as_view(), name="provider-fields"),
    path("mappings", MappingListView.as_view(), name="mapping-list"),
    path("mappings/preview", MappingPreviewView.as_view(), name="mapping-preview"),
    path("mappings/<int:mapping_id>", MappingDetailView.as_view(), name="mapping-detail"),
]
