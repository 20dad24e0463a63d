from django.urls import path

from providers.views import RemoteFieldListView

urlpatterns = [
    path("providers/<str:provider>/fields", RemoteFieldListView.as_view(), name="provider-fields"),
]
