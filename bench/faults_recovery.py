"""Recovery scenarios: a crash between the database commit and the enqueue, and changes the CRMs
refuse (400) that an operator fixes and retries from the admin."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from bench.faults_common import (
    FIELDS,
    Answers,
    Client,
    Context,
    Expected,
    Outcome,
    contact_body,
    create_contacts,
    make_tokens,
    new_prefix,
)
from bench.faults_state import (
    finish,
    query,
    wait_idle,
)
from bench.stack import PYTHON, REPO, _plain_session

# Runs in `manage.py shell`: the real service writes each contact and its pending links in one
# transaction; the after-commit hook that would enqueue the forwarder does nothing, as if the
# process had died right after COMMIT; then the process really dies (SIGKILL), mid-flight.
_CRASH_AFTER_COMMIT = """
import json, os, signal, sys
from providers import dispatch
dispatch.enqueue_drain = lambda **kwargs: None
from contacts.services import contact_create
from contacts.serializers import ContactSerializer
bodies = json.loads(sys.stdin.read())
out = [ContactSerializer(contact_create(data=body)).data for body in bodies]
print(json.dumps(out, default=str), flush=True)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _crash_in_process(ctx: Context, bodies: list[dict]) -> list[dict]:
    done = subprocess.run(
        [PYTHON, "manage.py", "shell", "-c", _CRASH_AFTER_COMMIT],
        cwd=REPO, env=ctx.stack.process_env, input=json.dumps(bodies), capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    if done.returncode != -signal.SIGKILL:
        raise RuntimeError(f"the crashing writer exited with {done.returncode}: {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def crash_after_commit(ctx: Context) -> Outcome:
    """Contacts committed whose forwarder message was never published.

    Two faithful crashes, no test hook in the product: (a) volume: a separate process writes
    contacts through the real service (`contact_create`: contact + pending links, one transaction)
    with the after-commit enqueue silenced, then SIGKILLs itself; (b) the real API: redis-server is
    frozen (SIGSTOP), so each POST commits and then blocks in its after-commit enqueue; the gunicorn
    processes are SIGKILLed right there, Redis is restarted empty, gunicorn started again. Only the
    outbox sweeper can deliver those contacts. The clients of (b) then retry their POSTs with the
    same Idempotency-Key: a committed one answers with the stored contact, never a second one.
    """
    stack, outcome, prefix = ctx.stack, Outcome("crash_after_commit"), new_prefix("crash")
    answers, expected = Answers(), Expected()
    outcome.details["how"] = (
        "a: a process writes contacts through contact_create with the after-commit enqueue silenced, then is "
        "SIGKILLed; b: POSTs commit while redis-server is frozen (SIGSTOP) and block in their after-commit "
        "enqueue, where gunicorn is SIGKILLed; Redis comes back empty. Only the outbox sweeper can deliver them."
    )
    bodies = [contact_body(f"{prefix}-{i}@faults.example.com", i) for i in range(ctx.contacts)]
    began = time.monotonic()
    for body in _crash_in_process(ctx, bodies):
        expected.accepted(body)
    crashed_at = time.monotonic()
    ((pending,),) = query(
        stack,
        "SELECT count(*) FROM providers_providerlink l JOIN contacts_contact c ON c.id = l.contact_id"
        " WHERE c.email LIKE %s AND l.status = 'pending'",
        [prefix + "-%"],
    )
    outcome.details["a_committed_not_enqueued"] = len(expected.state)
    outcome.details["a_links_pending_after_crash"] = pending
    outcome.details["a_write_seconds"] = round(crashed_at - began, 1)
    outcome.check(pending == 2 * len(bodies), f"only {pending} links pending after the crash")
    outcome.check(wait_idle(stack, time.monotonic() + 120), "the sweeper never delivered the crashed writes")
    outcome.details["a_seconds_to_deliver"] = round(time.monotonic() - crashed_at, 1)
    return _crash_in_gunicorn(ctx, outcome, answers, expected, prefix)


def _crash_in_gunicorn(ctx: Context, outcome: Outcome, answers: Answers, expected: Expected, prefix: str) -> Outcome:
    stack = ctx.stack
    count = 12  # twice what 3 gunicorn workers x 2 threads take at once
    bodies = [contact_body(f"{prefix}-api-{i}@faults.example.com", i) for i in range(count)]
    tokens = make_tokens(stack, count)
    ctx.redis.freeze()  # connections hang instead of failing fast

    def post(index: int) -> int | None:
        session = _plain_session(1)
        session.headers.update({"Authorization": f"Bearer {tokens[index]}", "Idempotency-Key": f"{prefix}-api-{index}"})
        try:
            return session.post(f"{stack.api_url}/contacts", json=bodies[index], timeout=60).status_code
        except requests.RequestException:
            return None

    committed: list[tuple] = []
    with ThreadPoolExecutor(count) as pool:
        futures = [pool.submit(post, i) for i in range(count)]
        # Each committed request then blocks for seconds on the frozen Redis (cache and broker
        # timeouts); kill well inside that window, once the first commits are in.
        deadline, first_commit = time.monotonic() + 30, None
        while time.monotonic() < deadline:
            committed = query(stack, "SELECT id FROM contacts_contact WHERE email LIKE %s", [prefix + "-api-%"])
            if committed and first_commit is None:
                first_commit = time.monotonic()
            if len(committed) >= 6 or (first_commit and time.monotonic() - first_commit > 1.5):
                break
            time.sleep(0.1)
        time.sleep(0.3)
        stack.kill("web")  # SIGKILL, the arbiter and its workers, mid-request
        crashed_at = time.monotonic()
        first_answers = [f.result() for f in futures]
    ctx.redis.stop(signal.SIGKILL)
    ctx.redis.start()  # empty
    stack.start("web")
    committed = query(stack, "SELECT id FROM contacts_contact WHERE email LIKE %s", [prefix + "-api-%"])
    outcome.details["b_committed_when_killed"] = len(committed)
    outcome.details["b_answers_before_the_kill"] = [a for a in first_answers if a is not None]
    outcome.check(len(committed) > 0, "no POST had committed when gunicorn was killed")
    outcome.check(all(a is None for a in first_answers), "a POST was answered although Redis was frozen")
    # Only the sweeper can deliver them now: nothing else is written until they are synced.
    outcome.check(wait_idle(stack, time.monotonic() + 120), "the sweeper never delivered the crashed requests")
    outcome.details["b_seconds_to_deliver"] = round(time.monotonic() - crashed_at, 1)
    # The clients never got an answer; they retry with the same Idempotency-Key.
    retried = []
    for index in range(count):
        client = Client(stack, tokens[index], answers)
        key = {"Idempotency-Key": f"{prefix}-api-{index}"}
        answer = client.call("POST", "/contacts", json=bodies[index], headers=key, retry_for=30)
        if answer is not None and answer.status_code == 201:
            expected.accepted(answer.json())
            retried.append(answer.json()["id"])
    ids = {str(row[0]) for row in committed}
    outcome.details["b_retries_replayed"] = len(ids & set(retried))
    outcome.check(ids <= set(retried), "a retried POST did not answer with the contact its first attempt stored")
    return finish(outcome, stack, expected, answers, since=crashed_at, prefix=prefix)


# --- 400s from the CRMs, fixed by an operator -------------------------------------------------------
ADMIN_USER, ADMIN_PASSWORD = "faults-admin", "faults-admin-password-1"


def _admin_session(ctx: Context) -> requests.Session:
    env = {**ctx.stack.process_env, "DJANGO_SUPERUSER_PASSWORD": ADMIN_PASSWORD}
    # A second run finds the user already there and fails harmlessly.
    command = ["manage.py", "createsuperuser", "--noinput", "--username", ADMIN_USER, "--email", "ops@example.com"]
    subprocess.run([PYTHON, *command], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    session = _plain_session(2)
    login = f"{ctx.stack.api_url}/admin/login/"
    page = session.get(login, timeout=30)
    answer = session.post(
        login,
        data={"username": ADMIN_USER, "password": ADMIN_PASSWORD, "csrfmiddlewaretoken": _csrf(page.text),
              "next": "/admin/"},
        timeout=30,
    )  # fmt: skip
    if "sessionid" not in session.cookies:
        raise RuntimeError(f"admin login failed: {answer.status_code} {answer.text[:300]}")
    return session


def _csrf(html: str) -> str:
    match = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    if not match:
        raise RuntimeError("no CSRF token in the admin page")
    return match.group(1)


def admin_retry(ctx: Context, dead_letter_ids: list[int]) -> str:
    """Select the dead letters in the admin changelist and run the "Retry now" action."""
    session = _admin_session(ctx)
    changelist = f"{ctx.stack.api_url}/admin/providers/deadletter/"
    page = session.get(changelist, timeout=30)
    answer = session.post(
        changelist,
        data={"action": "retry_now", "_selected_action": [str(i) for i in dead_letter_ids], "index": "0",
              "select_across": "0", "csrfmiddlewaretoken": _csrf(page.text)},
        timeout=60,
    )  # fmt: skip
    message = re.search(r"Queued \d+ dead letter\(s\)[^<]*", answer.text)
    return message.group(0) if message else f"HTTP {answer.status_code}, no confirmation"


def crm_refusals(ctx: Context) -> Outcome:
    """Some contacts carry emails Django accepts and both CRMs refuse (`…@localhost`): they are
    parked with the CRM's own code while the rest of their batches go through. Half are fixed
    through the API (PATCH: resent at once); half by a data fix in the database, then retried
    with the admin's "Retry now" action. All end synced, the dead letters resolved."""
    stack, outcome, prefix = ctx.stack, Outcome("crm_400_parked_then_fixed"), new_prefix("bad")
    answers, expected = Answers(), Expected()
    bad_every = 10

    def body(email: str, index: int) -> dict[str, str]:
        if index % bad_every == 0:
            email = email.replace("@faults.example.com", "@localhost")
        return contact_body(email, index)

    began = time.monotonic()
    create_contacts(stack, answers, expected, prefix=prefix, count=ctx.contacts, clients=6, body=body)
    outcome.check(wait_idle(stack, time.monotonic() + 120), "links still pending before the fix")
    parked = query(
        stack,
        "SELECT c.id, c.email, l.provider, l.last_error_code FROM providers_providerlink l JOIN contacts_contact c"
        " ON c.id = l.contact_id WHERE c.email LIKE %s AND l.status = 'parked' ORDER BY c.email",
        [prefix + "-%"],
    )
    bad = sorted({(str(cid), email) for cid, email, _, _ in parked})
    codes = sorted({(provider, code) for _, _, provider, code in parked})
    wanted = {e for e in expected.state if e.endswith("@localhost")}
    outcome.details.update(
        parked_links=len(parked), crm_error_codes=codes, seconds_to_park=round(time.monotonic() - began, 1)
    )
    outcome.check({email for _, email in bad} == wanted, "parked contacts are not exactly the refused ones")
    outcome.check(len(parked) == 2 * len(wanted), f"{len(parked)} links parked for {len(wanted)} refused contacts")
    # Half: the client fixes its data through the API.
    fixed_by_api, fixed_in_db = bad[::2], bad[1::2]
    client = Client(stack, make_tokens(stack, 1)[0], answers)
    for contact_id, email in fixed_by_api:
        fixed = email.replace("@localhost", "@fixed.example.com")
        answer = client.call("PATCH", f"/contacts/{contact_id}", json={"email": fixed}, retry_for=30)
        if answer is not None and answer.status_code == 200:
            expected.state.pop(email.lower(), None)
            expected.accepted(answer.json())
    # Half: an operator corrects the rows in the database, then retries the dead letters from the admin.
    for contact_id, email in fixed_in_db:
        query(
            stack,
            "UPDATE contacts_contact SET email = %s, version = version + 1 WHERE id = %s RETURNING id",
            [email.replace("@localhost", "@fixed.example.com"), contact_id],
        )
    rows = query(
        stack,
        "SELECT c.id, c.email, c.first_name, c.last_name, c.phone, c.company, c.job_title FROM contacts_contact c"
        " WHERE c.id = ANY(%s::uuid[])",
        [[cid for cid, _ in fixed_in_db]],
    )
    for contact_id, email, *rest in rows:
        expected.state.pop(email.replace("@fixed.example.com", "@localhost").lower(), None)
        expected.accepted({"id": str(contact_id), **dict(zip(FIELDS, (email, *rest), strict=True))})
    letters = [row[0] for row in query(
        stack,
        "SELECT d.id FROM providers_deadletter d WHERE d.status = 'parked' AND d.contact_id = ANY(%s::uuid[])",
        [[cid for cid, _ in fixed_in_db]],
    )]  # fmt: skip
    fixed_at = time.monotonic()
    outcome.details["admin_message"] = admin_retry(ctx, letters)
    outcome.details["dead_letters_retried_from_admin"] = len(letters)
    result = finish(outcome, stack, expected, answers, since=fixed_at, prefix=prefix)
    (left,) = query(
        stack,
        "SELECT count(*) FILTER (WHERE d.status = 'parked'), count(*) FROM providers_deadletter d"
        " JOIN contacts_contact c ON c.id = d.contact_id WHERE c.email LIKE %s",
        [prefix + "-%"],
    )
    result.details["dead_letters_parked_after"] = left[0]
    result.check(left[0] == 0 and left[1] > 0, f"dead letters parked after the fix: {left[0]} of {left[1]}")
    return result
