from django.urls import path

from contacts.views import (
    ContactBatchView,
    ContactDetailView,
    ContactHistoryView,
    ContactListView,
    ContactMergeView,
    ContactRestoreView,
    ContactSyncView,
    FieldDetailView,
    FieldListView,
)

urlpatterns = [
    path("contacts", ContactListView.as_view(), name="contact-list"),
    path("contacts/batch", ContactBatchView.as_view(), name="contact-batch"),
    path("contacts/<uuid:contact_id>", ContactDetailView.as_view(), name="contact-detail"),
    path("contacts/<uuid:contact_id>/history", ContactHistoryView.as_view(), name="contact-history"),
    path("contacts/<uuid:contact_id>/sync", ContactSyncView.as_view(), name="contact-sync"),
    path("contacts/<uuid:contact_id>/merge", ContactMergeView.as_view(), name="contact-merge"),
    path("contacts/<uuid:contact_id>/restore", ContactRestoreView.as_view(), name="contact-restore"),
    path("fields", FieldListView.as_view(), name="field-list"),
    path("fields/<str:key>", FieldDetailView.as_view(), name="field-detail"),
]
