"""CRM connections as data (providers/connections.py): the API, the checks made with the CRM,
pause, resume and delete, webhook routing between the portals of one app, idle credential checks."""

import json

import pytest

from contacts.models import Contact
from crm import registry
from crm.base import WebhookEvent as ParsedEvent
from crm.registry import connected_providers, get_provider
from providers import crm_state
from providers.models import Connection, ConnectionStatus, ProviderLink
from sandbox.testing import SandboxControl, running_sandbox
from webhooks.services import inbox_route

pytestmark = pytest.mark.django_db

PORTAL = 555001
ORG = "00D5e000000AbCd"


@pytest.fixture
def second_portal(hubspot):
    """A second HubSpot portal beside the one the environment connects."""
    with running_sandbox("hubspot", rate_limit=None, portal_id=PORTAL) as running:
        yield running


def _connect(api_client, **body):
    return api_client.post("/connections", body, format="json")


def test_a_private_app_token_connects_a_portal_and_is_never_shown(api_client, second_portal):
    answer = _connect(
        api_client, provider="hubspot", name="HubSpot Sales", instance_url=second_portal.url,
        credentials={"access_token": "sandbox-token"},
    )  # fmt: skip

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert (body["key"], body["provider"], body["account_id"]) == ("hubspot-sales", "hubspot", str(PORTAL))
    assert (body["status"], body["source"], body["webhook_path"]) == ("active", "api", "/webhooks/hubspot-sales")
    assert "sandbox-token" not in answer.content.decode()
    listed = api_client.get("/connections")
    assert [c["key"] for c in listed.json()] == ["hubspot", "hubspot-sales"]
    assert "sandbox-token" not in listed.content.decode()
    row = Connection.objects.get(key="hubspot-sales")
    assert "sandbox-token" not in row.credentials  # what a database dump shows
    assert "hubspot-sales" in connected_providers()
    assert get_provider("hubspot-sales").kind == "hubspot"


def test_refused_credentials_are_a_400_with_the_crm_message_and_nothing_is_stored(api_client, second_portal):
    answer = _connect(
        api_client, provider="hubspot", instance_url=second_portal.url, credentials={"access_token": "wrong"}
    )

    assert answer.status_code == 400
    assert answer.json()["code"] == "credentials_refused"
    assert "HubSpot refused these credentials" in answer.json()["message"]
    assert not Connection.objects.exclude(key="hubspot").exists()


def test_an_account_connected_already_is_a_409(api_client, second_portal):
    body = {"provider": "hubspot", "instance_url": second_portal.url, "credentials": {"access_token": "sandbox-token"}}
    assert api_client.post("/connections", body, format="json").status_code == 201

    again = api_client.post("/connections", {**body, "name": "Again"}, format="json")

    assert again.status_code == 409
    assert again.json()["code"] == "account_already_connected"
    assert again.json()["details"]["account_id"] == str(PORTAL)


def test_a_refresh_token_connects_through_the_token_lookup(api_client, second_portal):
    credentials = {
        "refresh_token": "sandbox-refresh-token",
        "client_id": "sandbox-client",
        "client_secret": "sandbox-secret",
    }

    answer = _connect(
        api_client, provider="hubspot", name="EU", instance_url=second_portal.url, credentials=credentials
    )

    assert answer.status_code == 201, answer.content
    assert (answer.json()["key"], answer.json()["account_id"]) == ("eu", str(PORTAL))


def test_salesforce_client_credentials_find_the_org(api_client, hubspot):
    with running_sandbox("salesforce", organization_id=ORG, rate_limit=None) as org:
        answer = _connect(
            api_client, provider="salesforce", name="Acme org", instance_url=org.url,
            credentials={"client_id": "sandbox-client", "client_secret": "sandbox-secret"},
        )  # fmt: skip

        assert answer.status_code == 201, answer.content
        assert answer.json()["account_id"][:15] == ORG
        assert get_provider("acme-org").kind == "salesforce"


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"provider": "pipedrive", "credentials": {"access_token": "x"}}, "provider"),
        ({"provider": "hubspot"}, "credentials"),
        ({"provider": "hubspot", "credentials": {"password": "x"}}, "password"),
        ({"provider": "hubspot", "credentials": {"access_token": 7}}, "access_token"),
        ({"provider": "hubspot", "credentials": {}}, "credentials"),
        ({"provider": "hubspot", "credentials": {"access_token": "x"}, "colour": "red"}, "colour"),
        ({"provider": "hubspot", "instance_url": "not a url", "credentials": {"access_token": "x"}}, "instance_url"),
        ({"provider": "hubspot", "credentials": {"access_token": "x"}, "budget_share": 1.5}, "budget_share"),
        ({"provider": "hubspot", "credentials": {"access_token": "x"}, "budget_share": 0}, "budget_share"),
        ({"provider": "hubspot", "credentials": {"access_token": "x"}, "daily_limit": -3}, "daily_limit"),
    ],
)
def test_bad_connection_requests_are_400s_naming_the_field(api_client, hubspot, body, field):
    answer = api_client.post("/connections", body, format="json")

    assert answer.status_code == 400
    assert field in json.dumps(answer.json()["details"])
    assert not Connection.objects.exclude(key="hubspot").exists()


def test_a_paused_connection_holds_changes_visibly_and_resume_sends_them(
    api_client, hubspot, enqueued, django_capture_on_commit_callbacks
):
    connection = api_client.get("/connections").json()[0]

    paused = api_client.post(f"/connections/{connection['id']}/pause")
    created = api_client.post("/contacts", {"email": "ada@example.com"}, format="json").json()

    assert paused.json()["status"] == "paused"
    assert (created["sync"]["hubspot"]["status"], created["sync"]["hubspot"]["reason"]) == ("paused", "paused")
    assert crm_state.crm_probe_paused() == {}  # working credentials do not undo an operator's pause
    enqueued.clear()
    with django_capture_on_commit_callbacks(execute=True):
        resumed = api_client.post(f"/connections/{connection['id']}/resume")
    assert resumed.json()["status"] == "active"
    assert enqueued == [["hubspot"]]
    assert api_client.get(f"/contacts/{created['id']}").json()["sync"]["hubspot"]["status"] == "pending"


def test_credentials_refused_do_not_undo_a_pause(hubspot):
    crm_state.crm_states()
    Connection.objects.filter(key="hubspot").update(status=ConnectionStatus.PAUSED)

    assert crm_state.crm_mark_auth_failed(provider="hubspot", error="401") is False
    assert Connection.objects.get(key="hubspot").status == ConnectionStatus.PAUSED


def test_deleting_a_connection_stops_its_sync_and_keeps_its_history(api_client, hubspot):
    contact = api_client.post("/contacts", {"email": "ada@example.com"}, format="json").json()
    connection = api_client.get("/connections").json()[0]

    assert api_client.delete(f"/connections/{connection['id']}").status_code == 204

    assert "hubspot" not in connected_providers()
    assert api_client.get(f"/contacts/{contact['id']}").json()["sync"] == {}
    assert ProviderLink.objects.filter(contact_id=contact["id"], provider="hubspot").exists()
    assert api_client.get("/connections").json() == []
    deleted = api_client.get("/connections?deleted=true").json()[0]
    assert (deleted["status"], deleted["deleted_at"] is not None) == ("disabled", True)
    assert api_client.delete(f"/connections/{connection['id']}").status_code == 204  # already gone: the same
    assert api_client.post(f"/connections/{connection['id']}/resume").status_code == 400
    Contact.objects.create(email="after@example.com")
    assert api_client.get("/connections/999999").status_code == 404


def test_webhook_events_go_to_the_connection_of_their_portal(api_client, second_portal, caplog):
    api_client.post(
        "/connections", {"provider": "hubspot", "name": "EU", "instance_url": second_portal.url,
                         "credentials": {"access_token": "sandbox-token"}}, format="json",
    )  # fmt: skip
    crm = get_provider("eu")
    events = [
        ParsedEvent(event_id="1", payload={"portalId": PORTAL, "eventId": 1}),
        ParsedEvent(event_id="2", payload={"portalId": 999, "eventId": 2}),
        ParsedEvent(event_id="3", payload={"eventId": 3}),
    ]

    routed = inbox_route(crm=crm, events=events)

    # The EU connection knows its portal: another portal's event is not its own, and no other
    # connection holds that portal, so it is dropped and logged; one naming no portal stays.
    assert {key: [e.event_id for e in found] for key, found in routed.items()} == {"eu": ["1", "3"]}
    assert "not connected dropped" in caplog.text
    # The environment's connection was configured without its portal id: what no other connection
    # claims is its own, what the EU portal sent goes there.
    assert {k: [e.event_id for e in v] for k, v in inbox_route(crm=get_provider("hubspot"), events=events).items()} == {
        "eu": ["1"], "hubspot": ["2", "3"],
    }  # fmt: skip


def test_idle_connections_have_their_credentials_checked(hubspot, settings):
    settings.CONNECTION_CHECK_INTERVAL_SECONDS = 60
    crm_state.crm_states()

    assert crm_state.crm_probe_idle() == {"hubspot": True}
    assert Connection.objects.get(key="hubspot").last_probe_at is not None
    assert crm_state.crm_probe_idle() == {}  # checked a moment ago

    hubspot.config(token="revoked")
    Connection.objects.filter(key="hubspot").update(last_probe_at=None)
    registry.reset()
    assert crm_state.crm_probe_idle() == {"hubspot": False}
    assert Connection.objects.get(key="hubspot").status == ConnectionStatus.AUTH_FAILED


def test_a_new_key_is_rolled_in_and_the_old_one_dropped(api_client, second_portal, settings):
    from cryptography.fernet import Fernet
    from django.core.management import call_command

    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.CREDENTIALS_KEYS = [old]
    _connect(api_client, provider="hubspot", name="EU", instance_url=second_portal.url,
             credentials={"access_token": "sandbox-token"})  # fmt: skip
    settings.CREDENTIALS_KEYS = [new, old]

    call_command("rotate_credentials")

    settings.CREDENTIALS_KEYS = [new]  # the old key dropped: the connection still works
    registry.reset()
    assert get_provider("eu").account_id() == str(PORTAL)


def test_a_new_connection_gets_every_contact_in_shares_and_a_lost_message_is_resumed(
    api_client, second_portal, monkeypatch, django_capture_on_commit_callbacks
):
    from datetime import timedelta

    from django.utils import timezone

    from providers import backfill, dispatch
    from providers.models import SyncCursor

    sent: list[list] = []
    monkeypatch.setattr(dispatch, "task_send", lambda name, *, args, **options: sent.append([name, *args]))
    for n in range(3):
        Contact.objects.create(email=f"c{n}@example.com")
    with django_capture_on_commit_callbacks(execute=True):
        _connect(api_client, provider="hubspot", name="EU", instance_url=second_portal.url,
                 credentials={"access_token": "sandbox-token"})  # fmt: skip
    assert sent == [[dispatch.CONNECTION_BACKFILL, "eu"]]

    # The message was lost: the sweeper finds the checkpoint that has not moved and sends it again.
    SyncCursor.objects.filter(provider__endswith=":eu").update(updated_at=timezone.now() - timedelta(hours=1))
    assert backfill.connection_backfills_resume() == ["eu"]

    sent.clear()
    with django_capture_on_commit_callbacks(execute=True):
        first = backfill.backfill_connection(key="eu", share=2)
    assert first.stop_reason == "limit"
    assert [dispatch.CONNECTION_BACKFILL, "eu"] in sent  # the next share follows (the forwarder drains these)
    assert ProviderLink.objects.filter(provider="eu").count() == 2
    with django_capture_on_commit_callbacks(execute=True):
        second = backfill.backfill_connection(key="eu", share=2)
    assert second.finished
    assert ProviderLink.objects.filter(provider="eu", status="pending").count() == 3
    assert backfill.backfill_connection(key="eu") is None  # done: the checkpoint is gone
    assert backfill.connection_backfills_resume() == []


def test_the_account_the_environment_connects_is_not_connected_again(api_client, hubspot, settings):
    # The environment connects the sandbox's portal without naming it (no HUBSPOT_PORTAL_ID).
    body = {
        "provider": "hubspot", "name": "Same portal", "instance_url": settings.HUBSPOT["base_url"],
        "credentials": {"access_token": "sandbox-token"},
    }  # fmt: skip

    answer = api_client.post("/connections", body, format="json")

    assert answer.status_code == 409, answer.content
    assert answer.json()["details"] == {"account_id": "62515", "connection": "hubspot"}
    assert Connection.objects.get(key="hubspot").account_id == "62515"  # learnt, and kept
    assert list(Connection.objects.values_list("key", flat=True)) == ["hubspot"]


def test_new_credentials_for_the_environments_connection_must_reach_its_account(api_client, second_portal):
    environment = api_client.get("/connections").json()[0]  # its portal (62515) is not in the settings
    other = {"instance_url": second_portal.url, "credentials": {"access_token": "sandbox-token"}}

    answer = api_client.patch(f"/connections/{environment['id']}", other, format="json")

    assert answer.status_code == 400, answer.content
    assert answer.json()["details"] == {"account_id": str(PORTAL), "connected_account_id": "62515"}
    assert Connection.objects.get(key="hubspot").instance_url == ""


def test_a_refusal_of_credentials_replaced_meanwhile_does_not_pause_the_reconnected_account(
    api_client, second_portal, enqueued, monkeypatch, django_capture_on_commit_callbacks
):
    from providers import sync

    body = {"provider": "hubspot", "name": "EU", "instance_url": second_portal.url,
            "credentials": {"access_token": "sandbox-token"}}  # fmt: skip
    connection = api_client.post("/connections", body, format="json").json()
    contact = Contact.objects.create(email="ada@example.com")
    ProviderLink.objects.create(contact=contact, provider="eu")
    stale = get_provider("eu")  # what a worker holds until it looks at the connections again
    SandboxControl(second_portal.url).config(token="new-token")  # the old token revoked in HubSpot
    reconnected = api_client.patch(
        f"/connections/{connection['id']}", {"credentials": {"access_token": "new-token"}}, format="json"
    )
    assert reconnected.json()["status"] == "active"
    enqueued.clear()

    monkeypatch.setattr(sync, "get_provider", lambda name: stale)
    with django_capture_on_commit_callbacks(execute=True):
        sync.drain(provider_name="eu", linger=False)

    assert Connection.objects.get(key="eu").status == ConnectionStatus.ACTIVE
    assert ProviderLink.objects.get(provider="eu").status == "pending"
    assert enqueued == [["eu"]]  # sent again at once, with the new credentials
    monkeypatch.undo()
    sync.drain(provider_name="eu", linger=False)
    assert ProviderLink.objects.get(provider="eu").status == "synced"


def test_a_connection_s_api_budget_is_set_shown_and_applied(api_client, second_portal):
    answer = _connect(
        api_client, provider="hubspot", name="Budgeted", instance_url=second_portal.url,
        credentials={"access_token": "sandbox-token"}, budget_share=0.2, daily_limit=1000,
    )  # fmt: skip

    assert answer.status_code == 201, answer.content
    body = answer.json()
    assert (body["budget_share"], body["daily_limit"]) == (0.2, 1000)
    assert body["budget"]["allowed"] == {"live": 200, "reconcile": 180, "backfill": 150}
    assert body["budget"]["backfill_paused_until"] is None
    get_provider("budgeted").client.probe()

    changed = api_client.patch(f"/connections/{body['id']}", {"budget_share": None}, format="json")

    assert changed.status_code == 200, changed.content
    budget = changed.json()["budget"]
    # The default share (API_BUDGET_SHARE); two calls so far: the account's discovery and the probe.
    assert (changed.json()["budget_share"], budget["share"], budget["used"]) == (None, 0.5, 2)
    registry.refresh()
    assert get_provider("budgeted").client.path.budget.share == 0.5  # the provider is built again with it


def test_a_connection_added_by_another_process_is_found_by_its_first_drain(api_client, second_portal, monkeypatch,
                                                                          settings):  # fmt: skip
    settings.CONNECTIONS_REFRESH_SECONDS = 3600
    assert "hubspot-sales" not in connected_providers()  # this process looked before the connection existed
    with monkeypatch.context() as elsewhere:  # added by the API process: this one is not told
        elsewhere.setattr(registry, "refresh", lambda: None)
        answer = _connect(api_client, provider="hubspot", name="HubSpot Sales", instance_url=second_portal.url,
                          credentials={"access_token": "sandbox-token"})  # fmt: skip
        assert answer.status_code == 201, answer.content

    assert get_provider("hubspot-sales").kind == "hubspot"
    with pytest.raises(LookupError):
        get_provider("never-connected")
