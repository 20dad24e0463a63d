"""The Celery app: JSON only, at-least-once delivery, one task at a time, routes onto syncroot.queues."""

import time

import pytest
from django.conf import settings
from kombu.exceptions import OperationalError

from syncroot import queues
from syncroot.celery import app


@pytest.fixture(scope="module")
def registered_tasks() -> set[str]:
    app.loader.import_default_modules()  # the autodiscovered tasks modules
    return set(app.tasks)


def route(task_name: str) -> str:
    return app.amqp.router.route({}, task_name)["queue"].name


def test_only_json_crosses_the_broker():
    assert app.conf.accept_content == ["json"]
    assert app.conf.task_serializer == "json"
    assert app.conf.result_serializer == "json"


def test_delivery_is_at_least_once_and_one_task_at_a_time():
    assert app.conf.task_acks_late is True
    assert app.conf.task_reject_on_worker_lost is True
    assert app.conf.worker_prefetch_multiplier == 1
    assert app.conf.task_ignore_result is True


def test_the_broker_is_the_configured_redis():
    assert app.conf.broker_url == settings.CELERY_BROKER_URL
    assert app.conf.broker_url.startswith("redis://")


def test_publishing_gives_up_fast_when_the_broker_is_down():
    # The API enqueues after commit; a dead broker must cost it well under a second, not a hang.
    policy = app.conf.task_publish_retry_policy
    assert policy["max_retries"] <= 1
    assert policy["interval_max"] <= 0.5
    assert app.conf.broker_transport_options["socket_connect_timeout"] <= 2


def test_retry_countdowns_stay_below_the_visibility_timeout():
    visibility = app.conf.broker_transport_options["visibility_timeout"]
    assert visibility == settings.CELERY_BROKER_VISIBILITY_TIMEOUT
    assert settings.SYNC_BACKOFF_CAP_SECONDS < visibility


@pytest.mark.parametrize(
    ("task", "queue"),
    [
        ("providers.tasks.drain_provider", queues.FORWARDER),
        ("providers.tasks.sweep_outbox", queues.FORWARDER),
        ("providers.tasks.retry_provider", queues.DLQ),
        ("providers.tasks.retry_dead_letter", queues.DLQ),
    ],
)
def test_tasks_are_routed_to_their_queue(task, queue):
    assert route(task) == queue


def test_an_unrouted_task_goes_to_the_forwarder_queue():
    assert app.conf.task_default_queue == queues.FORWARDER
    assert route("some.unrouted.task") == queues.FORWARDER


def test_every_route_names_a_known_queue_and_an_existing_task(registered_tasks):
    for task, options in settings.CELERY_TASK_ROUTES.items():
        assert options["queue"] in queues.ALL, task
        assert task in registered_tasks, f"route for a task that does not exist: {task}"


def test_every_beat_entry_runs_an_existing_task(registered_tasks):
    assert settings.CELERY_BEAT_SCHEDULE
    for name, entry in app.conf.beat_schedule.items():
        assert entry["task"] in registered_tasks, name


def test_queue_names_are_distinct():
    assert len(set(queues.ALL)) == len(queues.ALL) == 4
    assert {queues.FORWARDER, queues.DLQ, queues.WEBHOOKS_SALESFORCE, queues.WEBHOOKS_HUBSPOT} == set(queues.ALL)


def test_a_worker_retries_an_unreachable_broker_every_two_seconds_at_most():
    """The worker's consumer (PromptConsumer) against a closed port: four retries take seconds,
    where Celery's own backoff (2 + 4 + 6 + 8 s) would take twenty."""
    from syncroot.celery import PromptConsumer

    assert app.conf.worker_consumer == "syncroot.celery:PromptConsumer"
    consumer = PromptConsumer.__new__(PromptConsumer)  # only the connection logic is exercised
    consumer.app, consumer.first_connection_attempt, consumer.broker_connection_retry_attempt = app, False, 0
    connection = app.connection_for_read(url="redis://127.0.0.1:1/0")
    configured, app.conf.broker_connection_max_retries = app.conf.broker_connection_max_retries, 4
    began = time.monotonic()
    try:
        with pytest.raises(OperationalError):
            consumer.ensure_connected(connection)
    finally:
        app.conf.broker_connection_max_retries = configured
        connection.release()

    assert consumer.broker_connection_retry_attempt >= 3
    assert time.monotonic() - began < 8.0


class _Task:
    """What the task signals carry: a task whose request says whether it ran eagerly."""

    def __init__(self, *, eager: bool) -> None:
        self.request = type("Request", (), {"is_eager": eager})()


def _task_ran(*, eager: bool = False) -> None:
    from celery import signals

    task = _Task(eager=eager)
    signals.task_prerun.send(sender=task, task_id="t", task=task, args=(), kwargs={})
    signals.task_postrun.send(sender=task, task_id="t", task=task, args=(), kwargs={}, retval=None, state="SUCCESS")


@pytest.mark.django_db(transaction=True)
def test_a_worker_keeps_its_database_connection_between_tasks():
    from celery.fixups.django import DjangoWorkerFixup
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    _task_ran()
    _task_ran()

    assert connection.connection is raw  # Celery's fixup alone opened a new one for every task
    assert DjangoWorkerFixup(app).db_reuse_max == 10_000  # its own close: rarely


@pytest.mark.django_db(transaction=True)
def test_a_broken_connection_is_replaced_before_the_next_tasks_first_query():
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    raw.close()  # the server went away between tasks
    connection.errors_occurred = True  # as the failed query that noticed it leaves it

    _task_ran()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)
    assert connection.connection is not raw


@pytest.mark.django_db
def test_an_eager_task_leaves_its_callers_connection_alone():
    from django.db import connection

    connection.ensure_connection()
    raw = connection.connection
    _task_ran(eager=True)  # inside the test's transaction: closing it here would break the caller

    assert connection.connection is raw
