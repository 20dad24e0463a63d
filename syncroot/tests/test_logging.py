"""Log lines carry their context (request, task, contact, CRM) and never a credential."""

import io
import json
import logging
import logging.config
import uuid

import pytest
from celery import shared_task
from django.utils.module_loading import import_string

from syncroot import log_context
from syncroot.log_context import ContextFilter, TextFormatter

logger = logging.getLogger("syncroot.tests.logging")


@shared_task(name="syncroot.tests.log_probe")
def log_probe(contact_id: str, provider: str) -> None:
    logger.info("probe ran")


def _formatter(settings, name: str) -> logging.Formatter:
    """The formatter exactly as settings.LOGGING declares it."""
    config = dict(settings.LOGGING["formatters"][name])
    factory = import_string(config.pop("()")) if "()" in config else logging.Formatter
    if "format" in config:
        config["fmt"] = config.pop("format")
    return factory(**config)


@pytest.fixture
def log_output(settings):
    """Root logging through the configured JSON formatter and context filter, into a buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(settings, "json"))
    handler.addFilter(ContextFilter())
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    yield stream
    root.removeHandler(handler)
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


@pytest.mark.django_db
def test_api_log_lines_carry_the_callers_request_id_and_never_the_token(client, log_output):
    token = f"sr_{uuid.uuid4().hex}"

    response = client.get("/contacts", headers={"Authorization": f"Bearer {token}", "X-Request-ID": "req-42.a"})

    assert response.status_code == 401
    assert response["X-Request-ID"] == "req-42.a"
    refused = [line for line in lines(log_output) if line["logger"] == "django.request"]
    assert refused, log_output.getvalue()
    assert refused[0]["request_id"] == "req-42.a"
    assert refused[0]["level"] == "WARNING"
    assert token not in log_output.getvalue()
    assert "Authorization" not in log_output.getvalue()


@pytest.mark.django_db
def test_a_request_without_a_usable_request_id_gets_a_fresh_one(api_client, log_output):
    bad = "no spaces allowed; " + "x" * 200

    first = api_client.get("/contacts/00000000-0000-0000-0000-000000000000", headers={"X-Request-ID": bad})
    second = api_client.get("/contacts/00000000-0000-0000-0000-000000000000")

    assert first.status_code == second.status_code == 404
    ids = [first["X-Request-ID"], second["X-Request-ID"]]
    assert all(len(i) == 32 and i.isalnum() for i in ids)
    assert ids[0] != ids[1]
    logged = {line.get("request_id") for line in lines(log_output) if line["logger"] == "django.request"}
    assert logged == set(ids)


def test_request_context_ends_with_the_request(client, log_output):
    client.get("/healthz", headers={"X-Request-ID": "req-over"})

    logger.info("after the request")

    assert "request_id" not in lines(log_output)[-1]
    assert log_context.current() == {}


def test_task_lines_carry_task_id_name_and_the_contact_and_provider_it_was_given(log_output):
    contact_id = str(uuid.uuid4())

    result = log_probe.apply(args=[contact_id], kwargs={"provider": "hubspot"})
    logger.info("between tasks")

    probe = next(line for line in lines(log_output) if line["message"] == "probe ran")
    assert probe["task_id"] == result.id
    assert probe["task_name"] == "syncroot.tests.log_probe"
    assert probe["contact_id"] == contact_id
    assert probe["provider"] == "hubspot"
    after = lines(log_output)[-1]
    assert after["message"] == "between tasks"
    assert not {"task_id", "task_name", "contact_id", "provider"} & set(after)


def test_values_a_call_site_passes_win_over_the_context(log_output):
    with log_context.bound(provider="salesforce", contact_id="from-context"):
        logger.info("synced", extra={"provider": "hubspot"})

    line = lines(log_output)[-1]
    assert line["provider"] == "hubspot"
    assert line["contact_id"] == "from-context"


def test_credentials_are_scrubbed_from_extras_and_messages(log_output):
    logger.warning(
        "CRM said no to Bearer %s", "pat-na1-secret-value",
        extra={"authorization": "Bearer pat-na1-secret-value", "access_token": "abc", "provider": "hubspot"},
    )  # fmt: skip

    text = log_output.getvalue()
    line = lines(log_output)[-1]
    assert "pat-na1-secret-value" not in text
    assert "abc" not in text
    assert line["message"] == "CRM said no to Bearer [redacted]"
    assert line["authorization"] == line["access_token"] == "[redacted]"
    assert line["provider"] == "hubspot"


def test_text_format_appends_the_context(settings):
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(_formatter(settings, "text"))
    handler.addFilter(ContextFilter())
    assert isinstance(handler.formatter, TextFormatter)
    record = logging.LogRecord("syncroot.x", logging.INFO, __file__, 1, "plain line", None, None)

    with log_context.bound(request_id="r1", provider="hubspot"):
        handler.handle(record)

    assert stream.getvalue().rstrip().endswith("plain line [request_id=r1 provider=hubspot]")


def test_workers_log_with_the_django_config_at_the_level_they_were_started_with(settings):
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    settings.LOGGING = {**settings.LOGGING, "handlers": {**settings.LOGGING["handlers"]}}
    settings.LOGGING["handlers"]["console"] = {**settings.LOGGING["handlers"]["console"], "formatter": "json"}
    try:
        log_context.configure_worker_logging(loglevel="WARNING")

        console = next(h for h in root.handlers if isinstance(h, logging.StreamHandler))
        assert type(console.formatter).__name__ == "JsonFormatter"
        assert any(isinstance(f, ContextFilter) for f in console.filters)
        assert root.level == logging.WARNING
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in saved_handlers:
            root.addHandler(handler)
        root.setLevel(saved_level)
