"""Drive an OAuth consent page as a browser would: follow redirects to the page, read its form,
post it with a decision, and stop at the redirect back to the app (which a test reads instead of
serving). For tests and benchmarks; standard library HTML parsing only."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urljoin, urlsplit

import requests

__all__ = ["ConsentForm", "approve", "read_form"]


class ConsentForm(HTMLParser):
    """The first form of a page: its action, method and input values."""

    def __init__(self) -> None:
        super().__init__()
        self.action = ""
        self.method = "get"
        self.fields: dict[str, str] = {}
        self.buttons: list[tuple[str, str]] = []
        self._in_form = False
        self._done = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        if tag == "form" and not self._done:
            self._in_form = True
            self.action, self.method = values.get("action", ""), values.get("method", "get").lower()
        elif self._in_form and tag == "input" and values.get("name"):
            self.fields[values["name"]] = values.get("value", "")
        elif self._in_form and tag == "button" and values.get("name"):
            self.buttons.append((values["name"], values.get("value", "")))

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self._in_form:
            self._in_form, self._done = False, True


def read_form(html: str) -> ConsentForm:
    form = ConsentForm()
    form.feed(html)
    return form


def approve(session: requests.Session, authorize_url: str, *, decision: str = "allow") -> dict[str, Any]:
    """Open `authorize_url`, submit its consent form with `decision`; the query of the redirect
    back to the app (``{"code": ..., "state": ...}`` or ``{"error": ...}``), one value per key."""
    page = session.get(authorize_url, allow_redirects=True, timeout=10)
    page.raise_for_status()
    form = read_form(page.text)
    if not form.action:
        raise AssertionError(f"no form on the consent page: {page.text[:200]}")
    button = next((name for name, value in form.buttons if value == decision), "decision")
    answer = session.request(
        form.method.upper(),
        urljoin(page.url, form.action),
        data={**form.fields, button: decision},
        allow_redirects=False,
        timeout=10,
    )
    if answer.status_code not in (302, 303):
        raise AssertionError(f"consent answered {answer.status_code}: {answer.text[:200]}")
    location = answer.headers["Location"]
    return {"location": location, **{k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}}
