"""The CRM v3 properties API for contacts (``/crm/v3/properties/contacts``), mixed into the app.

Answers as hubspot-api-client's ``crm.properties.core_api`` expects: list 200
``{"results": [...]}``, create 201, read/update 200, archive 204. Tests may add
a property without auth or API accounting with ``POST /_sandbox/fields`` (same
body as the create call).
"""

from __future__ import annotations

from typing import Any

from werkzeug.wrappers import Request, Response

from sandbox.core import ApiError, empty_response, json_response
from sandbox.hubspot_properties import hs_error, not_found

__all__ = ["PropertyRoutes"]

PROPERTIES = "/crm/v3/properties/{object_type}"


def _contacts_only(object_type: str) -> None:
    # Only contacts live in this sandbox; HubSpot answers an unknown object type like this.
    if object_type not in ("contacts", "contact", "0-1"):
        raise hs_error(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")


class PropertyRoutes:
    """Property handlers for :class:`~sandbox.hubspot.HubSpotApp`."""

    def add_property_routes(self) -> None:
        add = self.router.add
        add("GET", PROPERTIES, self.list_properties)
        add("POST", PROPERTIES, self.create_property)
        add("GET", PROPERTIES + "/{property_name}", self.get_property)
        add("PATCH", PROPERTIES + "/{property_name}", self.update_property)
        add("DELETE", PROPERTIES + "/{property_name}", self.archive_property)
        self.control.add("POST", "/_sandbox/fields", self._control_add_property)

    def _property_body(self, request: Request) -> dict[str, Any]:
        body = self.json_body(request)
        if not isinstance(body, dict):
            raise hs_error(400, "VALIDATION_ERROR", "Invalid input JSON on line 1: expected an object")
        return body

    def list_properties(self, request: Request, object_type: str) -> Response:
        _contacts_only(object_type)
        specs = self.store.schema.all(archived=self.archived_flag(request))
        wanted = self.requested_properties(request)
        if wanted is not None:
            specs = [spec for spec in specs if spec.name in wanted]
        return json_response({"results": [spec.to_json() for spec in specs]})

    def get_property(self, request: Request, object_type: str, property_name: str) -> Response:
        _contacts_only(object_type)
        spec = self.store.schema.get(property_name, archived=self.archived_flag(request))
        if spec is None:
            raise not_found(property_name)
        return json_response(spec.to_json())

    def create_property(self, request: Request, object_type: str) -> Response:
        _contacts_only(object_type)
        spec = self.store.schema.create(self._property_body(request), user_id=str(self.config["ui_user_id"]))
        return json_response(spec.to_json(), 201)

    def update_property(self, request: Request, object_type: str, property_name: str) -> Response:
        _contacts_only(object_type)
        spec = self.store.schema.update(property_name, self._property_body(request))
        return json_response(spec.to_json())

    def archive_property(self, request: Request, object_type: str, property_name: str) -> Response:
        _contacts_only(object_type)
        self.store.schema.archive(property_name)
        return empty_response(204)

    def _control_add_property(self, request: Request) -> Response:
        body = self._control_json(request)
        try:
            spec = self.store.schema.create(body, user_id=str(self.config["ui_user_id"]))
        except ApiError as error:
            raise ValueError(error.body.get("message", "invalid property")) from None
        return json_response(spec.to_json(), 201)
