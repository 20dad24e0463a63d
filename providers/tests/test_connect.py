"""Connecting an account with OAuth (providers/connect.py): the code becomes a connection, or heals
the connection of that account whose credentials were refused; nothing is stored on a refusal."""

import json

import pytest
import requests

from crm.registry import connected_providers
from providers import crm_state
from providers.connect import connect_finish, connect_start
from providers.connections import AccountConnected, ConnectionInvalid, CredentialsRefused
from providers.models import Connection, ConnectionSource, ConnectionStatus
from sandbox.browser import approve
from sandbox.testing import running_sandbox
from syncroot.credentials import credentials_decrypt

pytestmark = pytest.mark.django_db

PORTAL = 555002
REDIRECT = "http://testserver/admin/providers/connection/connect/hubspot/callback/"


@pytest.fixture
def second_portal(hubspot, settings):
    """A portal beside the environment's, where SyncRoot's app is installed from the admin."""
    with running_sandbox("hubspot", rate_limit=None, portal_id=PORTAL, redirect_uris=[REDIRECT]) as running:
        settings.HUBSPOT = {
            **settings.HUBSPOT, "client_id": "sandbox-client", "client_secret": "sandbox-secret",
            "authorize_url": f"{running.url}/oauth/authorize", "oauth_base_url": running.url,
        }  # fmt: skip
        yield running


def _code() -> str:
    authorization = connect_start(provider="hubspot", redirect_uri=REDIRECT, state="s")
    return approve(requests.Session(), authorization.url)["code"]


def test_a_code_becomes_a_connection_with_encrypted_credentials(second_portal):
    done = connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT)

    row = Connection.objects.get(pk=done.connection.pk)
    stored = json.loads(credentials_decrypt(row.credentials))
    assert done.reconnected is False
    assert (row.key, row.account_id, row.source, row.status) == ("hubspot-555002", str(PORTAL), "oauth", "active")
    assert (row.instance_url, row.name) == (second_portal.url, f"HubSpot {PORTAL}")
    assert set(stored) == {"refresh_token", "client_id", "client_secret"}
    assert stored["refresh_token"] not in row.credentials
    assert "hubspot-555002" in connected_providers()


def test_the_account_of_a_refused_connection_is_reconnected(second_portal):
    first = connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT).connection
    Connection.objects.filter(pk=first.pk).update(status=ConnectionStatus.AUTH_FAILED, last_error="BAD_REFRESH_TOKEN")

    again = connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT)

    row = Connection.objects.get(pk=first.pk)
    assert again.reconnected is True
    assert (row.status, row.last_error, row.source) == (ConnectionStatus.ACTIVE, "", ConnectionSource.OAUTH)
    assert Connection.objects.filter(account_id=str(PORTAL)).count() == 1


def test_an_account_connected_and_working_is_not_connected_twice(second_portal):
    connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT)

    with pytest.raises(AccountConnected) as refused:
        connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT)

    assert refused.value.details["connection"] == "hubspot-555002"


def test_a_reconnect_must_reach_the_same_account(second_portal):
    environment = next(row for row in crm_state.crm_states() if row.key == "hubspot")  # portal 62515

    with pytest.raises(ConnectionInvalid) as refused:
        connect_finish(provider="hubspot", code=_code(), redirect_uri=REDIRECT, connection=environment)

    assert "another account" in refused.value.message
    assert not Connection.objects.filter(account_id=str(PORTAL)).exists()


def test_a_refused_code_stores_nothing(second_portal):
    code = _code()
    connect_finish(provider="hubspot", code=code, redirect_uri=REDIRECT)
    Connection.objects.filter(account_id=str(PORTAL)).delete()

    with pytest.raises(CredentialsRefused) as refused:
        connect_finish(provider="hubspot", code=code, redirect_uri=REDIRECT)

    assert "BAD_AUTH_CODE" in refused.value.message
    assert not Connection.objects.filter(account_id=str(PORTAL)).exists()


def test_an_app_without_client_credentials_says_what_to_set(hubspot, settings):
    settings.HUBSPOT = {**settings.HUBSPOT, "client_id": "", "client_secret": ""}

    with pytest.raises(ConnectionInvalid) as refused:
        connect_start(provider="hubspot", redirect_uri=REDIRECT, state="s")

    assert refused.value.message == (
        "HubSpot's OAuth app is not configured: set HUBSPOT_CLIENT_ID and HUBSPOT_CLIENT_SECRET."
    )
