"""Serving a sandbox app: a threaded werkzeug server on a daemon thread, with keep-alive.

werkzeug's development handler closes every connection after one response (and
then waits up to 10 ms draining the socket), so a benchmark client would pay a
TCP handshake and a thread start per request and pile up TIME_WAIT sockets.
:class:`KeepAliveRequestHandler` keeps werkzeug's request parsing and server
classes but runs the WSGI app itself: it drains exactly the unread request body,
writes headers and body in one send, and keeps HTTP/1.1 connections open.
"""

from __future__ import annotations

import logging
import socket
import threading
from dataclasses import dataclass, field
from typing import Any, Self

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server
from werkzeug.wsgi import LimitedStream

__all__ = ["KeepAliveRequestHandler", "RunningSandbox", "serve"]

logger = logging.getLogger(__name__)

_IDLE_TIMEOUT_S = 120.0  # idle keep-alive connections are closed after this long


class KeepAliveRequestHandler(WSGIRequestHandler):
    """Quiet (no per-request log line), keep-alive, one write per response."""

    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    timeout = _IDLE_TIMEOUT_S

    def setup(self) -> None:
        super().setup()
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.add(self.connection)

    def finish(self) -> None:
        connections = getattr(self.server, "open_connections", None)
        if connections is not None:
            connections.discard(self.connection)
        super().finish()

    def run_wsgi(self) -> None:
        if self.headers.get("Expect", "").lower().strip(" \t") == "100-continue":
            self.wfile.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        environ = self.make_environ()
        body_stream: LimitedStream | None = None
        if "wsgi.input_terminated" in environ:
            # A chunked body we cannot skip reliably if the app leaves some unread.
            self.close_connection = True
        else:
            try:
                length = int(environ.get("CONTENT_LENGTH") or 0)
            except ValueError:
                length, self.close_connection = 0, True
            body_stream = LimitedStream(self.rfile, max(0, length))
            environ["wsgi.input"] = body_stream
            environ["wsgi.input_terminated"] = True
        response_start: list[Any] = []

        def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            response_start[:] = [status, headers]
            return lambda data: None  # the legacy write() callable; the sandboxes never use it

        try:
            result = self.server.app(environ, start_response)
            try:
                body = b"".join(result)
            finally:
                close = getattr(result, "close", None)
                if close is not None:
                    close()
            status, headers = response_start
        except Exception:
            logger.exception("sandbox app failed on %s %s", self.command, self.path)
            status, headers, body = "500 INTERNAL SERVER ERROR", [("Content-Type", "text/plain")], b"internal error"
            self.close_connection = True
        if body_stream is not None:
            body_stream.exhaust()  # the next request line starts right after this body
        self._send(status, headers, body)

    def _send(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        code = int(status.split(" ", 1)[0])
        lines = [f"{self.protocol_version} {status}\r\n"]
        has_length = False
        for name, value in headers:
            lowered = name.lower()
            if lowered == "content-length":
                has_length = True
            elif lowered == "connection" and value.lower() == "close":
                self.close_connection = True
            lines.append(f"{name}: {value}\r\n")
        if not has_length and code not in (204, 304) and code >= 200:
            lines.append(f"Content-Length: {len(body)}\r\n")
        if self.close_connection:
            lines.append("Connection: close\r\n")
        lines.append("\r\n")
        head = "".join(lines).encode("latin-1")
        self.wfile.write(head + body if self.command != "HEAD" else head)

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return None

    def log_error(self, format: str, *args: Any) -> None:
        logger.debug("sandbox connection: " + format, *args)


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
        """Stop serving, drop open keep-alive connections, stop the app's background threads."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
        for connection in list(getattr(self.server, "open_connections", ())):
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by the peer
        close = getattr(self.app, "close", None)
        if close is not None:
            close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


def serve(app: Any, host: str = "127.0.0.1", port: int = 0) -> RunningSandbox:
    """Serve ``app`` threaded on ``host:port`` (0: an ephemeral port) in a daemon thread."""
    server = make_server(host, port, app, threaded=True, request_handler=KeepAliveRequestHandler)
    server.daemon_threads = True
    server.open_connections = set()  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.name = f"sandbox-{server.port}"
    thread.start()
    return RunningSandbox(app=app, server=server, thread=thread)
