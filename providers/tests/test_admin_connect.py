"""The admin's Connect buttons and Reconnect links (providers/admin_connect.py): who sees and may
use them, where they send the browser, and what is kept in the session until the CRM answers.
The whole flow, driven like a browser against both sandboxes, is in tests/e2e/test_connect_oauth.py."""

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth.models import Permission

from providers import crm_state
from providers.admin_connect import SESSION_KEY
from providers.models import Connection, ConnectionStatus

pytestmark = pytest.mark.django_db

LIST = "/admin/providers/connection/"


@pytest.fixture
def oauth_apps(hubspot, settings):
    settings.PUBLIC_BASE_URL = "https://sync.example.com"
    settings.HUBSPOT = {**settings.HUBSPOT, "client_id": "hs-client", "client_secret": "hs-secret",
                        "authorize_url": "https://app.hubspot.com/oauth/authorize"}  # fmt: skip
    settings.SALESFORCE = {**settings.SALESFORCE, "login_url": "https://login.salesforce.com",
                           "client_id": "sf-client", "client_secret": "sf-secret"}  # fmt: skip


def _query(url: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(url).query).items()}


def test_the_list_offers_a_connect_button_per_crm(admin_client, oauth_apps):
    page = admin_client.get(LIST).content.decode()

    assert f'<a href="{LIST}connect/hubspot/" class="connect-hubspot">Connect HubSpot</a>' in page
    assert f'<a href="{LIST}connect/salesforce/" class="connect-salesforce">Connect Salesforce</a>' in page


def test_connect_sends_the_browser_to_the_consent_page_with_a_state_kept_in_the_session(admin_client, oauth_apps):
    hubspot = admin_client.get(f"{LIST}connect/hubspot/")
    salesforce = admin_client.get(f"{LIST}connect/salesforce/")

    hs, sf = _query(hubspot["Location"]), _query(salesforce["Location"])
    pending = admin_client.session[SESSION_KEY]
    assert hubspot["Location"].startswith("https://app.hubspot.com/oauth/authorize?")
    assert hs["redirect_uri"] == f"https://sync.example.com{LIST}connect/hubspot/callback/"
    assert (hs["client_id"], hs["scope"]) == ("hs-client", "oauth crm.objects.contacts.read "
                                              "crm.objects.contacts.write crm.schemas.contacts.read")  # fmt: skip
    assert salesforce["Location"].startswith("https://login.salesforce.com/services/oauth2/authorize?")
    assert (sf["response_type"], sf["code_challenge_method"], sf["client_id"]) == ("code", "S256", "sf-client")
    assert sf["redirect_uri"] == f"https://sync.example.com{LIST}connect/salesforce/callback/"
    assert hs["state"] != sf["state"]
    assert len(hs["state"]) >= 40
    assert pending[hs["state"]]["provider"] == "hubspot"
    assert pending[sf["state"]]["verifier"]  # the PKCE verifier stays on the server
    assert pending[sf["state"]]["verifier"] not in salesforce["Location"]


def test_a_crm_without_an_oauth_app_says_what_to_set(admin_client, hubspot, settings):
    settings.SALESFORCE = {**settings.SALESFORCE, "client_id": "", "client_secret": ""}

    page = admin_client.get(f"{LIST}connect/salesforce/", follow=True)

    assert page.redirect_chain == [(LIST, 302)]
    assert "Salesforce&#x27;s OAuth app is not configured: set SALESFORCE_CLIENT_ID and SALESFORCE_CLIENT_SECRET." in (
        page.content.decode()
    )


def test_an_auth_failed_connection_has_a_reconnect_link(admin_client, oauth_apps):
    crm_state.crm_states()
    row = Connection.objects.get(key="hubspot")
    assert "Reconnect</a>" not in admin_client.get(LIST).content.decode()
    Connection.objects.filter(pk=row.pk).update(status=ConnectionStatus.AUTH_FAILED)

    page = admin_client.get(LIST).content.decode()
    start = admin_client.get(f"{LIST}connect/hubspot/?connection={row.pk}")

    assert f'<a class="reconnect" href="{LIST}connect/hubspot/?connection={row.pk}">Reconnect</a>' in page
    assert admin_client.session[SESSION_KEY][_query(start["Location"])["state"]]["connection"] == row.pk


def test_staff_who_may_only_view_connections_cannot_connect(client, django_user_model, oauth_apps):
    viewer = django_user_model.objects.create_user("viewer", password="x", is_staff=True)
    viewer.user_permissions.add(Permission.objects.get(codename="view_connection"))
    client.force_login(viewer)

    page = client.get(LIST)
    start = client.get(f"{LIST}connect/hubspot/")
    back = client.get(f"{LIST}connect/hubspot/callback/?code=c&state=s")

    assert page.status_code == 200
    assert "Connect HubSpot" not in page.content.decode()
    assert (start.status_code, back.status_code) == (403, 403)


def test_only_staff_reach_the_connect_views(client, oauth_apps):
    answer = client.get(f"{LIST}connect/hubspot/")

    assert answer.status_code == 302
    assert answer["Location"].startswith("/admin/login/")


def test_a_crm_not_connected_with_oauth_is_not_found(admin_client, oauth_apps):
    assert admin_client.get(f"{LIST}connect/pipedrive/").status_code == 404
