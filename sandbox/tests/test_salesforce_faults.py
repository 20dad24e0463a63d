"""Fault injection, the control plane and the command line of the Salesforce sandbox."""

import re
import subprocess
import sys
import time

import pytest
import requests
from simple_salesforce.exceptions import SalesforceGeneralError

from sandbox.salesforce_testing import running_salesforce

REQUESTS = 400


def test_error_rate_holds_within_tolerance_with_the_crm_bodies():
    with running_salesforce(seed=21, error_rate=0.2) as harness:
        responses = [harness.rest("GET", "limits") for _ in range(REQUESTS)]
        stats = harness.control.stats()
    failed = [response for response in responses if response.status_code != 200]
    assert 0.14 * REQUESTS <= len(failed) <= 0.26 * REQUESTS
    assert {response.status_code for response in failed} == {500, 503}
    codes = {response.status_code: response.json()[0]["errorCode"] for response in failed}
    assert codes == {500: "UNKNOWN_EXCEPTION", 503: "SERVER_UNAVAILABLE"}
    assert stats["faults"]["errors"] == len(failed)


def test_rate_limit_storms_are_503_with_retry_after_never_429():
    with running_salesforce(seed=22, rate_limit_storm=0.3) as harness:
        responses = [harness.rest("GET", "limits") for _ in range(REQUESTS)]
        refused = [response for response in responses if response.status_code != 200]
        assert 0.24 * REQUESTS <= len(refused) <= 0.36 * REQUESTS
        assert {response.status_code for response in refused} == {503}
        assert all(response.headers["Retry-After"] == "1" for response in refused)
        assert refused[0].json() == [
            {"errorCode": "SERVER_UNAVAILABLE", "message": "Server temporarily unavailable, please retry."}
        ]
        harness.control.config(rate_limit_storm=1.0)
        with pytest.raises(SalesforceGeneralError) as excinfo:
            harness.sf.Contact.create({"LastName": "Stormy"})
        assert excinfo.value.status == 503


def test_latency_is_added_to_every_call():
    with running_salesforce(latency_ms=60) as harness:
        started = time.monotonic()
        for _ in range(3):
            harness.sf.limits()
        assert time.monotonic() - started >= 0.18


def test_every_api_response_reports_usage():
    with running_salesforce() as harness:
        harness.sf.Contact.create({"LastName": "Counted"})
        missing = harness.rest("GET", "sobjects/Contact/003000000000009AAA")
        assert missing.status_code == 404
        assert missing.headers["Sforce-Limit-Info"] == "api-usage=2/100000"
        assert harness.control.stats()["api_usage"] == {"used": 2, "limit": 100000}


def test_control_plane_records_edit_reset_and_config_validation():
    with running_salesforce() as harness:
        control = harness.control
        created = control.edit(None, {"LastName": "Ui", "Email": "ui@example.com", "company": "Acme"})
        assert created["attributes"]["type"] == "Contact"
        assert created["Name"] == "Ui"
        records = control.records()
        assert sorted(record["attributes"]["type"] for record in records) == ["Account", "Contact"]
        deleted = control.edit(created["Id"], delete=True)
        assert deleted["IsDeleted"] is True
        assert control.stats()["objects"]["Contact"] == {"live": 0, "deleted": 1}

        bad = requests.post(f"{harness.url}/_sandbox/edit", json={"fields": {"Email": "x@example.com"}}, timeout=5)
        assert bad.status_code == 400
        assert "REQUIRED_FIELD_MISSING" in bad.json()["message"]
        unknown = requests.post(
            f"{harness.url}/_sandbox/edit", json={"id": "003000000000009AAA", "fields": {"Title": "x"}}, timeout=5
        )
        assert unknown.status_code == 404
        for change in ({"organization_id": "001000000000001AAA"}, {"change_events": "some"}, {"nope": 1}):
            assert requests.post(f"{harness.url}/_sandbox/config", json=change, timeout=5).status_code == 400
        assert control.config(organization_id="00D000000000002")["organization_id"] == "00D000000000002EAA"

        control.reset()
        assert control.records() == []
        assert harness.sf.query("SELECT COUNT() FROM Contact")["totalSize"] == 0


def test_command_line_serves_with_the_given_options():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "sandbox",
            "salesforce",
            "--port",
            "0",
            "--seed",
            "5",
            "--organization-id",
            "00D000000000003",
            "--webhook-url",
            "http://127.0.0.1:9/hook",
            "--latency-ms",
            "1",
            "--change-events",
            "all",
            "--token-ttl-s",
            "60",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()
        url = re.search(r"http://[\d.]+:\d+", line).group(0)
        config = requests.get(f"{url}/_sandbox/config", timeout=5).json()
        assert config["organization_id"] == "00D000000000003EAA"
        assert config["webhook_url"] == "http://127.0.0.1:9/hook"
        assert config["change_events"] == "all"
        assert config["latency_ms"] == 1
        assert config["token_ttl_s"] == 60
        response = requests.get(f"{url}/services/data/v59.0/limits", headers={"Authorization": "Bearer sandbox-token"})
        assert response.status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_a_request_window_cap_answers_503_with_retry_after():
    with running_salesforce(rate_limit={"max": 3, "interval_ms": 60_000}) as harness:
        statuses = [harness.rest("GET", "limits").status_code for _ in range(5)]
        assert statuses == [200, 200, 200, 503, 503]
        refused = harness.rest("GET", "limits")
        assert refused.json()[0]["errorCode"] == "SERVER_UNAVAILABLE"
        assert int(refused.headers["Retry-After"]) >= 1


def test_unlimited_quota_reports_a_large_maximum():
    with running_salesforce(daily_quota=0) as harness:
        harness.sf.limits()
        assert harness.sf.api_usage["api-usage"].total == 5_000_000
        assert harness.sf.limits()["DailyApiRequests"] == {"Max": 5_000_000, "Remaining": 4_999_998}


def test_instance_url_override_is_reported_to_clients():
    with running_salesforce(instance_url="https://acme.my.salesforce.com") as harness:
        response = harness.session.post(
            f"{harness.url}/services/oauth2/token",
            data={"grant_type": "client_credentials", "client_id": "sandbox-client", "client_secret": "sandbox-secret"},
        )
        assert response.json()["instance_url"] == "https://acme.my.salesforce.com"
