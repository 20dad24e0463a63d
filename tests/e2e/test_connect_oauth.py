"""An operator connects a second HubSpot portal and a second Salesforce org from the admin, as a
browser would: logged in through the admin's login form, following the redirects to the CRM's
consent page, posting its form, and back to SyncRoot's callback. A consent denied, an answer that
does not belong to the session or comes twice connect nothing; a grant revoked in the CRM pauses
that connection alone, and connecting the account again heals it and drains what waited."""

import html
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit

import pytest
import requests

from contacts.models import Contact
from providers.models import Connection, ConnectionStatus, DeadLetter, LinkStatus, ProviderLink
from sandbox.browser import read_form
from sandbox.server import RunningSandbox
from sandbox.testing import SandboxControl, running_sandbox
from syncroot.credentials import credentials_decrypt
from tests.e2e.conftest import SECRET, WEBHOOK_TOKEN

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(240)]

PASSWORD = "connect-password"
CONNECTIONS = "/admin/providers/connection/"
PORTAL = 777002
ORG = "00D000000000002EAA"
KEYS = {"hubspot": f"hubspot-{PORTAL}", "salesforce": f"salesforce-{ORG.lower()}"}
LABELS = {"hubspot": "HubSpot", "salesforce": "Salesforce"}


@dataclass
class Accounts:
    """The second account of each CRM, where SyncRoot's app is approved from the admin."""

    hubspot: RunningSandbox
    salesforce: RunningSandbox

    def control(self, crm: str) -> SandboxControl:
        return SandboxControl(getattr(self, crm).url)


def callback(server_url: str, crm: str) -> str:
    return f"{server_url}/admin/providers/connection/connect/{crm}/callback/"


@pytest.fixture
def accounts(bare_stack, settings) -> Iterator[Accounts]:
    server = bare_stack.server_url
    with (
        running_sandbox(
            "hubspot", client_secret=SECRET, portal_id=PORTAL, redirect_uris=[callback(server, "hubspot")],
            webhook_url=f"{server}/webhooks/hubspot",
        ) as hubspot,
        running_sandbox(
            "salesforce", organization_id=ORG, callback_urls=[callback(server, "salesforce")],
            webhook_url=f"{server}/webhooks/{KEYS['salesforce']}?token={WEBHOOK_TOKEN}",
        ) as salesforce,
    ):  # fmt: skip
        settings.HUBSPOT = {
            **settings.HUBSPOT, "client_id": "sandbox-client", "authorize_url": f"{hubspot.url}/oauth/authorize",
            "oauth_base_url": hubspot.url,
        }  # fmt: skip
        settings.SALESFORCE = {**settings.SALESFORCE, "oauth_login_url": salesforce.url}
        yield Accounts(hubspot=hubspot, salesforce=salesforce)


def login(server_url: str, django_user_model, name: str) -> requests.Session:
    """A staff member logged in through the admin's login form."""
    django_user_model.objects.create_superuser(name, f"{name}@example.com", PASSWORD)
    session = requests.Session()
    page = session.get(f"{server_url}/admin/login/?next={CONNECTIONS}", timeout=10)
    form = read_form(page.text)
    answer = session.post(
        urljoin(page.url, form.action), data={**form.fields, "username": name, "password": PASSWORD}, timeout=10
    )
    assert urlsplit(answer.url).path == CONNECTIONS, answer.text[:500]
    return session


@pytest.fixture
def operator(bare_stack, django_user_model) -> Iterator[requests.Session]:
    """Its keep-alive connection, and the server thread's database session with it, end with the test."""
    with login(bare_stack.server_url, django_user_model, "operator") as session:
        yield session


def connect_link(session: requests.Session, server_url: str, crm: str, *, row: str = "") -> str:
    """The Connect button's URL on the connections list, or the Reconnect link of the `row` keyed so."""
    listing = session.get(f"{server_url}{CONNECTIONS}", timeout=10)
    if row:
        rows = [tr for tr in re.findall(r"<tr[^>]*>(.*?)</tr>", listing.text, re.S) if f">{row}</a>" in tr]
        links = re.findall(r'<a class="reconnect" href="([^"]+)">Reconnect</a>', "".join(rows))
    else:
        links = re.findall(rf'<a href="([^"]+)" class="connect-{crm}"', listing.text)
    assert len(links) == 1, listing.text[:3000]
    return urljoin(listing.url, html.unescape(links[0]))


def consent(session: requests.Session, start: str, *, decision: str = "allow") -> str:
    """Follow the button to the CRM's consent page and post its form; the URL the CRM sends the
    browser back to (not opened yet)."""
    page = session.get(start, timeout=10)
    assert page.status_code == 200, page.text[:500]
    form = read_form(page.text)
    answer = session.post(
        urljoin(page.url, form.action), data={**form.fields, "decision": decision}, allow_redirects=False, timeout=10
    )
    assert answer.status_code == 302, answer.text[:500]
    return answer.headers["Location"]


def messages_of(page: requests.Response) -> list[tuple[str, str]]:
    found = re.findall(r'<li class="(success|error|warning|info)">(.*?)</li>', page.text, re.S)
    return [(level, html.unescape(text).strip()) for level, text in found]


def connect(session: requests.Session, server_url: str, crm: str, **options) -> list[tuple[str, str]]:
    back = consent(session, connect_link(session, server_url, crm, **options))
    page = session.get(back, timeout=30)
    assert urlsplit(page.url).path == CONNECTIONS
    return messages_of(page)


def stored_credentials(key: str) -> dict[str, str]:
    return json.loads(credentials_decrypt(Connection.objects.get(key=key).credentials))


# --- connecting, and what is refused --------------------------------------------------------------
@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_connect_from_the_admin_finds_the_account_and_stores_its_tokens_encrypted(bare_stack, accounts, operator, crm):
    shown = connect(operator, bare_stack.server_url, crm)

    row = Connection.objects.get(key=KEYS[crm])
    credentials = stored_credentials(KEYS[crm])
    label = LABELS[crm]
    assert shown == [
        ("success", f"Connected {label} account {row.account_id} as {KEYS[crm]!r}: every contact is being sent there.")
    ]
    assert row.account_id == {"hubspot": str(PORTAL), "salesforce": ORG}[crm]
    assert (row.source, row.status, row.instance_url) == ("oauth", "active", getattr(accounts, crm).url)
    assert set(credentials) == {"refresh_token", "client_id", "client_secret"}
    assert credentials["refresh_token"] not in row.credentials  # what a database dump shows


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_a_denied_consent_connects_nothing(bare_stack, accounts, operator, crm):
    back = consent(operator, connect_link(operator, bare_stack.server_url, crm), decision="deny")
    page = operator.get(back, timeout=10)

    label = LABELS[crm]
    assert "error=access_denied" in back
    assert messages_of(page) == [
        ("error", f"{label}: access was denied on {label}'s consent page; nothing was connected.")
    ]
    assert not Connection.objects.filter(source="oauth").exists()


@pytest.mark.parametrize("crm", ["hubspot", "salesforce"])
def test_an_answer_with_another_state_from_another_session_or_used_already_is_refused(
    bare_stack, accounts, operator, django_user_model, crm
):
    back = consent(operator, connect_link(operator, bare_stack.server_url, crm))
    answer = {k: v[0] for k, v in parse_qs(urlsplit(back).query).items()}
    forged = f"{back.split('?')[0]}?{urlencode({**answer, 'state': 'not-' + answer['state']})}"

    wrong_state = messages_of(operator.get(forged, timeout=10))
    with login(bare_stack.server_url, django_user_model, "colleague") as colleague:
        other_session = messages_of(colleague.get(back, timeout=10))
    assert not Connection.objects.filter(source="oauth").exists()  # the code was not used: it still works
    first = messages_of(operator.get(back, timeout=30))
    again = messages_of(operator.get(back, timeout=10))

    refused = (
        "error",
        f"{LABELS[crm]}: this answer does not belong to a connection started from this session, or it was used "
        f"already; nothing was connected. Use Connect {LABELS[crm]} again.",
    )
    assert wrong_state == other_session == again == [refused]
    assert first[0][0] == "success"
    assert Connection.objects.filter(source="oauth").count() == 1


# --- a grant revoked in the CRM, healed from the admin ---------------------------------------------
def revoke(accounts: Accounts, crm: str, refresh_token: str) -> None:
    """The app uninstalled from the portal (HubSpot), the connected app's access revoked (Salesforce)."""
    if crm == "hubspot":
        url = f"{accounts.hubspot.url}/oauth/v1/refresh-tokens/{refresh_token}"
        requests.delete(url, timeout=5).raise_for_status()
    else:
        url = f"{accounts.salesforce.url}/services/oauth2/revoke"
        requests.post(url, data={"token": refresh_token}, timeout=5).raise_for_status()


def last_name_there(accounts: Accounts, crm: str, email: str) -> str | None:
    for record in accounts.control(crm).records():
        if crm == "hubspot" and (record.get("properties") or {}).get("email") == email and not record.get("archived"):
            return record["properties"].get("lastname")
        if crm == "salesforce" and record.get("Email") == email and not record.get("IsDeleted"):
            return record.get("LastName")
    return None


@pytest.mark.parametrize(("crm", "how"), [("hubspot", "connect"), ("salesforce", "reconnect")])
def test_a_revoked_grant_pauses_that_connection_until_it_is_connected_again(stack, accounts, operator, crm, how):
    key = KEYS[crm]
    assert connect(operator, stack.server_url, crm)[0][0] == "success"
    contact = stack.api.post("/contacts", {"email": "ada@example.com", "last_name": "Lovelace"}, format="json").json()
    stack.wait_until(lambda: last_name_there(accounts, crm, "ada@example.com") == "Lovelace", timeout=30)
    revoked = stored_credentials(key)["refresh_token"]

    revoke(accounts, crm, revoked)
    assert stack.api.patch(f"/contacts/{contact['id']}", {"last_name": "Byron"}, format="json").status_code == 200
    stack.wait_until(
        lambda: Connection.objects.filter(key=key, status=ConnectionStatus.AUTH_FAILED).exists(), timeout=30
    )
    sync = stack.api.get(f"/contacts/{contact['id']}").json()["sync"]
    assert (sync[key]["status"], sync[key]["reason"]) == ("paused", "auth_failed")
    assert last_name_there(accounts, crm, "ada@example.com") == "Lovelace"

    # Connect HubSpot again (the account tells which connection it heals), or the row's Reconnect link.
    shown = connect(operator, stack.server_url, crm, **({"row": key} if how == "reconnect" else {}))

    assert shown == [
        (
            "success",
            f"Reconnected {key!r} ({LABELS[crm]} account "
            f"{Connection.objects.get(key=key).account_id}): sync is active; the changes that waited are being sent.",
        )
    ]
    assert Connection.objects.filter(source="oauth").count() == 1
    assert stored_credentials(key)["refresh_token"] != revoked
    stack.wait_until(lambda: last_name_there(accounts, crm, "ada@example.com") == "Byron", timeout=30)
    stack.wait_until(
        lambda: ProviderLink.objects.filter(contact_id=contact["id"], provider=key, status=LinkStatus.SYNCED).exists()
    )
    assert Connection.objects.get(key=key).status == ConnectionStatus.ACTIVE
    assert Contact.objects.get(pk=contact["id"]).last_name == "Byron"
    assert DeadLetter.objects.count() == 0
