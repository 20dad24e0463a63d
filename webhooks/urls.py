from django.urls import re_path

from webhooks.views import webhook_receive

# One endpoint per CRM, named by its registry key; a trailing slash is tolerated because the URL is
# typed into each CRM's settings by hand (and signed as typed, so both forms verify).
urlpatterns = [
    re_path(r"^webhooks/(?P<provider>[A-Za-z0-9_-]{1,64})/?$", webhook_receive, name="webhook-receive"),
]
