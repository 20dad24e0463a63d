from django.urls import path

from contacts.views import ContactBatchView, ContactDetailView, ContactListView, ContactSyncView

urlpatterns = [
    path("contacts", ContactListView.as_view(), name="contact-list"),
    path("contacts/batch", ContactBatchView.as_view(), name="contact-batch"),
    path("contacts/<uuid:contact_id>", ContactDetailView.as_view(), name="contact-detail"),
    path("contacts/<uuid:contact_id>/sync", ContactSyncView.as_view(), name="contact-sync"),
]
