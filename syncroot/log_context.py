"""Context on every log line: which request, which task, which contact, which CRM.

A contextvar holds `request_id` (API requests, from RequestIdMiddleware), `task_id`/`task_name`
(Celery's task_prerun/task_postrun), and `contact_id`/`provider` when a task's arguments name
them. `ContextFilter`, on the console handler, copies them onto each record; a value the call
site passes itself (`extra={"provider": ...}`) wins. The same filter scrubs credentials: any
attribute named like a secret, and a bearer token inside a message, never reach the output.
"""

from __future__ import annotations

import inspect
import logging
import logging.config
import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import Any

from django.http import HttpRequest, HttpResponse

CONTEXT_FIELDS = ("request_id", "task_id", "task_name", "contact_id", "provider")
REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_SECRET_NAME = re.compile(r"authorization|token|secret|password|cookie|api_key", re.IGNORECASE)
_BEARER = re.compile(r"(Bearer\s+)[^\s\"',;]+", re.IGNORECASE)
REDACTED = "[redacted]"

_context: ContextVar[dict[str, str]] = ContextVar("syncroot_log_context", default={})  # noqa: B039 (never mutated)


def current() -> dict[str, str]:
    """The context now in force (a copy)."""
    return dict(_context.get())


def bind(**values: Any) -> Token[dict[str, str]]:
    """Add values to the context until `unbind(token)`; None values are left out."""
    merged = {**_context.get(), **{k: str(v) for k, v in values.items() if v is not None}}
    return _context.set(merged)


def unbind(token: Token[dict[str, str]]) -> None:
    _context.reset(token)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    token = bind(**values)
    try:
        yield
    finally:
        unbind(token)


class ContextFilter(logging.Filter):
    """Adds the context to each record and removes credentials from it. Never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, value in _context.get().items():
            if not hasattr(record, name):
                setattr(record, name, value)
        # Django logs 4xx/5xx answers (django.request) after the middleware returned: take the id
        # from the request the record carries.
        request_id = getattr(getattr(record, "request", None), "request_id", None)
        if request_id and not hasattr(record, "request_id"):
            record.request_id = request_id
        for name in list(vars(record)):
            if _SECRET_NAME.search(name) and name not in CONTEXT_FIELDS:
                setattr(record, name, REDACTED)
        if isinstance(record.msg, str):
            try:
                message = record.getMessage() if record.args else record.msg
            except Exception:  # a malformed call: the handler reports it; a filter must not raise
                return True
            if _BEARER.search(message):
                record.msg, record.args = _BEARER.sub(rf"\g<1>{REDACTED}", message), None
        return True


class TextFormatter(logging.Formatter):
    """The plain format, with the context appended as key=value pairs (LOG_FORMAT=text)."""

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        pairs = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS if getattr(record, name, None)]
        return f"{line} [{' '.join(pairs)}]" if pairs else line


# --- API requests --------------------------------------------------------------------------------


class RequestIdMiddleware:
    """Takes the caller's X-Request-ID (or makes one), binds it for the logs, echoes it back."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        given = request.headers.get(REQUEST_ID_HEADER, "").strip()
        # Only a sane id is trusted: it is copied into every log line of the request.
        request_id = given if _VALID_REQUEST_ID.match(given) else uuid.uuid4().hex
        request.request_id = request_id  # type: ignore[attr-defined]
        token = bind(request_id=request_id)
        try:
            response = self.get_response(request)
        finally:
            unbind(token)
        response[REQUEST_ID_HEADER] = request_id
        return response


# --- Celery --------------------------------------------------------------------------------------

_task_tokens: dict[str, Token[dict[str, str]]] = {}


def _task_arguments(task: Any, args: Any, kwargs: Any) -> dict[str, Any]:
    """contact_id / provider from the task's own arguments, when its signature names them."""
    try:
        bound_args = inspect.signature(task.run).bind_partial(*(args or ()), **(kwargs or {}))
    except (TypeError, ValueError):
        return {}
    return {name: bound_args.arguments[name] for name in ("contact_id", "provider") if name in bound_args.arguments}


def task_started(task_id: str | None = None, task: Any = None, args: Any = None, kwargs: Any = None, **_: Any) -> None:
    if task_id is None:
        return
    _task_tokens[task_id] = bind(
        task_id=task_id, task_name=getattr(task, "name", None), **_task_arguments(task, args, kwargs)
    )


def task_finished(task_id: str | None = None, **_: Any) -> None:
    token = _task_tokens.pop(task_id, None) if task_id else None
    if token is not None:
        try:
            unbind(token)
        except ValueError:  # set in another context (a thread pool): fall back to a clean slate
            _context.set({})


def configure_worker_logging(loglevel: int | str | None = None, **_: Any) -> None:
    """Celery's setup_logging: the Django LOGGING config (JSON by default) instead of Celery's own,
    at the level the worker was started with (`--loglevel`, which the Procfile sets from LOG_LEVEL)."""
    from django.conf import settings

    logging.config.dictConfig(settings.LOGGING)
    if loglevel:
        logging.getLogger().setLevel(loglevel)


def connect_celery_signals() -> None:
    from celery import signals

    signals.setup_logging.connect(configure_worker_logging, weak=False)
    signals.task_prerun.connect(task_started, weak=False)
    signals.task_postrun.connect(task_finished, weak=False)
