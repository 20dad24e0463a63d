from django.urls import path

from contacts.views import ContactDetailView, ContactListView, ContactSyncView

urlpatterns = [
    path("contacts", ContactListView.as_view(), name="contact-list"),
    path("contacts/<uuid:contact_id>", ContactDetailView.as_view(), name="contact-detail"),
    path("contacts/<uuid:contact_id>/sync", ContactSyncView.as_view(), name="contact-sync"),
]
