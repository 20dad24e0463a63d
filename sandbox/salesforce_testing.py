"""Pointing the unmodified simple-salesforce SDK (or any ``requests`` client) at the sandbox.

simple-salesforce always builds ``https://`` URLs from ``instance_url`` and logs
in at ``https://{domain}.salesforce.com``. :func:`sdk_session` returns a
``requests.Session`` whose adapter sends those requests to the plain-HTTP
sandbox instead::

    session = sdk_session(running.url)
    sf = Salesforce(instance_url=running.url, session_id="sandbox-token", session=session)
    sf = Salesforce(username="u@x.com", password="pw", consumer_key="sandbox-client",
                    consumer_secret="sandbox-secret", session=session)
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import requests
from requests.adapters import HTTPAdapter
from simple_salesforce import Salesforce

from sandbox.server import RunningSandbox
from sandbox.testing import SandboxControl, running_sandbox

__all__ = ["HttpsToHttpAdapter", "SalesforceHarness", "running_salesforce", "sdk_session"]


class HttpsToHttpAdapter(HTTPAdapter):
    """Rewrites ``https://<sandbox host:port>`` and ``https://*.salesforce.com`` to the sandbox URL."""

    def __init__(self, sandbox_url: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.sandbox_url = sandbox_url.rstrip("/")
        self._own = "https://" + urlsplit(self.sandbox_url).netloc

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        if url.startswith(self._own + "/"):
            request.url = self.sandbox_url + url[len(self._own) :]
        else:
            parts = urlsplit(url)
            if parts.hostname and parts.hostname.endswith(".salesforce.com"):
                request.url = self.sandbox_url + url[len(f"{parts.scheme}://{parts.netloc}") :]
        return super().send(request, **kwargs)


def sdk_session(sandbox_url: str) -> requests.Session:
    """A session routing the SDK's https URLs (instance and login hosts) to ``sandbox_url``."""
    session = requests.Session()
    session.trust_env = False  # loopback: never through a proxy
    session.mount("https://", HttpsToHttpAdapter(sandbox_url))
    return session


@dataclass
class SalesforceHarness:
    """A running Salesforce sandbox, an SDK client on the static token, and its control plane."""

    running: RunningSandbox
    session: requests.Session
    sf: Salesforce
    control: SandboxControl

    @property
    def url(self) -> str:
        return self.running.url

    @property
    def app(self) -> Any:
        return self.running.app

    def rest(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        """A raw call to ``/services/data/v59.0/<path>`` with the static token (no SDK error mapping)."""
        headers = {"Authorization": "Bearer " + self.sf.session_id, **kwargs.pop("headers", {})}
        return self.session.request(method, f"{self.url}/services/data/v59.0/{path}", headers=headers, **kwargs)


@contextmanager
def running_salesforce(**options: Any) -> Iterator[SalesforceHarness]:
    """Serve a Salesforce sandbox (``options``: ``seed`` and config keys) with an SDK client for the block."""
    with running_sandbox("salesforce", **options) as running:
        session = sdk_session(running.url)
        token = options.get("token", "sandbox-token")
        sf = Salesforce(instance_url=running.url, session_id=token, session=session)
        yield SalesforceHarness(running, session, sf, SandboxControl(running.url))
