"""The ``/_sandbox/*`` control plane every sandbox serves (no auth, JSON, not counted in stats).

Mixed into :class:`sandbox.core.SandboxApp`; providers add routes with
``self.control.add(method, "/_sandbox/...", handler)`` and may read a JSON
object body with :meth:`ControlPlane._control_json`.
"""

from __future__ import annotations

import json
from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.config import ConfigError, coerce_bool, coerce_non_negative
from sandbox.responses import json_response

__all__ = ["ControlPlane"]


class ControlPlane:
    """Control-plane routes and dispatch for :class:`~sandbox.core.SandboxApp`."""

    def _dispatch_control(self, request: Request) -> Response:
        found = self.control.match(request.method, request.path)
        if not isinstance(found, tuple):
            status = 405 if found else 404
            return json_response({"error": "not_found" if status == 404 else "method_not_allowed"}, status)
        route, params = found
        try:
            return route.handler(request, **params)
        except ConfigError as exc:
            return json_response({"error": "invalid_config", "message": str(exc)}, 400)
        except KeyError as exc:
            return json_response({"error": "not_found", "message": f"no record {exc.args[0]!r}"}, 404)
        except (TypeError, ValueError) as exc:
            return json_response({"error": "bad_request", "message": str(exc)}, 400)

    def _setup_control_routes(self) -> None:
        add = self.control.add
        add("GET", "/_sandbox/config", lambda request: json_response(dict(self.config)))
        add("POST", "/_sandbox/config", self._control_set_config)
        add("POST", "/_sandbox/edit", self._control_edit)
        add("GET", "/_sandbox/records", lambda request: json_response({"records": self.list_records()}))
        add("POST", "/_sandbox/reset", self._control_reset)
        add("GET", "/_sandbox/stats", lambda request: json_response(self.stats()))
        add("POST", "/_sandbox/webhooks/flush", self._control_flush)

    @staticmethod
    def _control_json(request: Request) -> dict[str, Any]:
        data = request.get_data(cache=True)
        try:
            body = json.loads(data) if data.strip() else {}
        except ValueError:
            raise ValueError("body must be JSON") from None
        if not isinstance(body, dict):
            raise TypeError("body must be a JSON object")
        return body

    def _control_set_config(self, request: Request) -> Response:
        return json_response(self.update_config(self._control_json(request)))

    def _control_edit(self, request: Request) -> Response:
        return json_response(self.edit_record(self._control_json(request)))

    def _control_reset(self, request: Request) -> Response:
        body = self._control_json(request)
        self.reset(config=coerce_bool(body.get("config", False)))
        return json_response({"reset": True, "config": dict(self.config)})

    def _control_flush(self, request: Request) -> Response:
        timeout = coerce_non_negative(self._control_json(request).get("timeout_s", 10.0))
        done = self.dispatcher.flush(timeout)
        return json_response({"flushed": done, "webhooks": self.dispatcher.stats()}, 200 if done else 504)
