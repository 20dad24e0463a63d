"""Serving a sandbox app: a threaded werkzeug server on a daemon thread."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

__all__ = ["QuietRequestHandler", "RunningSandbox", "serve"]


class QuietRequestHandler(WSGIRequestHandler):
    """No per-request log line, and no Nagle delay between header and body writes."""

    disable_nagle_algorithm = True

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None


@dataclass
class RunningSandbox:
    """A sandbox being served. ``url`` is ``http://host:port`` (no trailing slash)."""

    app: Any
    server: BaseWSGIServer
    thread: threading.Thread = field(repr=False)

    @property
    def host(self) -> str:
        return str(self.server.host)

    @property
    def port(self) -> int:
        return int(self.server.port)

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def stop(self) -> None:
        """Stop serving, close the socket and the app's background threads."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        close = getattr(self.app, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> RunningSandbox:
    """Serve ``app`` threaded on ``host:port`` (0: an ephemeral port) in a daemon thread."""
    server = make_server(host, port, app, threaded=True, request_handler=QuietRequestHandler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.name = f"sandbox-{server.port}"
    thread.start()
    return RunningSandbox(app=app, server=server, thread=thread)
