from django.urls import path

from providers.views import (
    ConflictDetailView,
    ConflictListView,
    ConflictResolveView,
    ConnectionDetailView,
    ConnectionListView,
    ConnectionPauseView,
    ConnectionResumeView,
    MappingDetailView,
    MappingListView,
    MappingPreviewView,
    RemoteFieldListView,
)

urlpatterns = [
    path("providers/<str:provider>/fields", RemoteFieldListView.as_view(), name="provider-fields"),
    path("mappings", MappingListView.as_view(), name="mapping-list"),
    path("mappings/preview", MappingPreviewView.as_view(), name="mapping-preview"),
    path("mappings/<int:mapping_id>", MappingDetailView.as_view(), name="mapping-detail"),
    path("conflicts", ConflictListView.as_view(), name="conflict-list"),
    path("conflicts/<int:conflict_id>", ConflictDetailView.as_view(), name="conflict-detail"),
    path("conflicts/<int:conflict_id>/resolve", ConflictResolveView.as_view(), name="conflict-resolve"),
    path("connections", ConnectionListView.as_view(), name="connection-list"),
    path("connections/<int:connection_id>", ConnectionDetailView.as_view(), name="connection-detail"),
    path("connections/<int:connection_id>/pause", ConnectionPauseView.as_view(), name="connection-pause"),
    path("connections/<int:connection_id>/resume", ConnectionResumeView.as_view(), name="connection-resume"),
]
