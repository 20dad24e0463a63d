"""The connected CRMs, seen through the API. Views parse, call one service, render."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.views import ERRORS, ErrorSerializer
from providers import conflicts, connections, field_backfill, mappings, remote_fields
from providers.serializers import (
    ConflictQuerySerializer,
    ConflictResolveSerializer,
    ConflictSerializer,
    ConnectionCreateSerializer,
    ConnectionSerializer,
    ConnectionUpdateSerializer,
    MappingCreateSerializer,
    MappingQuerySerializer,
    MappingSerializer,
    MappingUpdateSerializer,
    PreviewSerializer,
    RemoteFieldQuerySerializer,
    RemoteFieldSerializer,
)

CRM_ERRORS = {
    **ERRORS,
    404: OpenApiResponse(response=ErrorSerializer, description="No CRM of that name is connected"),
    502: OpenApiResponse(
        response=ErrorSerializer, description="The CRM refused SyncRoot's credentials (`crm_auth_failed`) or the call"
    ),
    503: OpenApiResponse(
        response=ErrorSerializer,
        description="The CRM is unavailable (`crm_unavailable`, with its message), or the database or broker",
    ),
}
CONNECT_ERRORS = {
    **ERRORS,
    400: OpenApiResponse(
        response=ErrorSerializer,
        description="Invalid input, or the CRM refused the credentials (`credentials_refused`, with its message)",
    ),
    409: OpenApiResponse(response=ErrorSerializer, description="The account is connected already"),
    502: OpenApiResponse(response=ErrorSerializer, description="The CRM could not be asked (`crm_unavailable`)"),
}


class RemoteFieldListView(APIView):
    @extend_schema(
        parameters=[RemoteFieldQuerySerializer], responses={200: RemoteFieldSerializer(many=True), **CRM_ERRORS}
    )
    def get(self, request: Request, provider: str) -> Response:
        """The CRM's contact fields (built-in and custom), to map SyncRoot's fields onto. Answered
        from a cache kept CRM_SCHEMA_CACHE_SECONDS; `?refresh=true` asks the CRM again."""
        query = RemoteFieldQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        fields = remote_fields.remote_field_list(provider=provider, refresh=query.validated_data["refresh"])
        return Response(fields)


class MappingListView(APIView):
    @extend_schema(parameters=[MappingQuerySerializer], responses={200: MappingSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        """Each connected CRM's field mappings: which CRM field each SyncRoot field travels to, and
        which side wins (`rule`)."""
        query = MappingQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        found = mappings.mapping_list(provider=query.validated_data.get("provider"))
        return Response(MappingSerializer(found, many=True).data)

    @extend_schema(request=MappingCreateSerializer, responses={201: MappingSerializer, **CRM_ERRORS})
    def post(self, request: Request) -> Response:
        """Map a custom field onto a CRM field. Checked against the CRM's schema: the field exists,
        is writable when the rule writes to it, and takes the custom field's type (400 with the
        reason). Starts the backfill of that one field, whose progress `backfill` shows."""
        given = MappingCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        mapping = mappings.mapping_create(**given.validated_data)
        return Response(MappingSerializer(mapping).data, status=201)


class MappingPreviewView(APIView):
    @extend_schema(request=MappingCreateSerializer, responses={200: PreviewSerializer, **CRM_ERRORS})
    def post(self, request: Request) -> Response:
        """What a would-be mapping would change: how many contacts on each side, and up to 20
        before/after samples. Reads the CRM; changes nothing. A built-in field's mapping can be
        previewed with another rule."""
        given = MappingCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        return Response(field_backfill.mapping_preview(**given.validated_data))


class MappingDetailView(APIView):
    @extend_schema(responses={200: MappingSerializer, **ERRORS})
    def get(self, request: Request, mapping_id: int) -> Response:
        return Response(MappingSerializer(mappings.mapping_get(mapping_id=mapping_id)).data)

    @extend_schema(request=MappingUpdateSerializer, responses={200: MappingSerializer, **ERRORS})
    def patch(self, request: Request, mapping_id: int) -> Response:
        """Change a mapping's rule, or a custom enum field's value_map. It applies at once to every
        change sent or received after it, and backfills the field as the new rule says; the email
        mapping stays `two_way` (400 `identity_mapping`)."""
        changes = MappingUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        mapping = mappings.mapping_update(mapping_id=mapping_id, **changes.validated_data)
        return Response(MappingSerializer(mapping).data)

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, mapping_id: int) -> Response:
        """Stop syncing a custom field with the CRM. A built-in field's mapping is never deleted
        (409 `builtin_mapping`): set its rule to `off`."""
        mappings.mapping_delete(mapping_id=mapping_id)
        return Response(status=204)


class ConflictListView(APIView):
    @extend_schema(parameters=[ConflictQuerySerializer], responses={200: ConflictSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        """Every case that needs a person, newest first: email clashes, merge candidates, values that
        do not fit, paused bouncing fields, CRM records without an email. `?status=open` for the work
        left; each open case lists the `allowed_actions` of `POST /conflicts/{id}/resolve`."""
        query = ConflictQuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        rows = conflicts.conflict_list(**query.validated_data)[:1000]
        return Response(ConflictSerializer(rows, many=True).data)


class ConflictDetailView(APIView):
    @extend_schema(responses={200: ConflictSerializer, **ERRORS})
    def get(self, request: Request, conflict_id: int) -> Response:
        return Response(ConflictSerializer(conflicts.conflict_get(conflict_id=conflict_id)).data)


class ConflictResolveView(APIView):
    @extend_schema(request=ConflictResolveSerializer, responses={200: ConflictSerializer, **ERRORS})
    def post(self, request: Request, conflict_id: int) -> Response:
        """Apply a choice everywhere and close the case: `keep_syncroot` (SyncRoot's value goes to the
        CRM), `keep_crm` (the CRM's value is taken; for an email clash, the record's contact merges into
        the one holding the email, the record's values winning), `merge` (an email clash: the two
        contacts merge; a merge candidate: the CRM's two records merge there), `ignore` (closed as is).
        An action the case does not allow is 400 `action_not_allowed`; a closed case is 409."""
        body = ConflictResolveSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        row = conflicts.conflict_resolve(conflict_id=conflict_id, action=body.validated_data["action"])
        return Response(ConflictSerializer(row).data)


class ConnectionListView(APIView):
    @extend_schema(responses={200: ConnectionSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        """The CRM accounts SyncRoot syncs with (deleted ones are kept, with `deleted_at`, for their
        history: `?deleted=true`)."""
        include_deleted = request.query_params.get("deleted") == "true"
        rows = connections.connection_list(include_deleted=include_deleted)
        return Response(ConnectionSerializer(rows, many=True).data)

    @extend_schema(request=ConnectionCreateSerializer, responses={201: ConnectionSerializer, **CONNECT_ERRORS})
    def post(self, request: Request) -> Response:
        """Connect an account: the CRM is asked which account the credentials reach (`account_id`);
        refused credentials are 400 `credentials_refused`, an account connected already 409. Every
        live contact is then sent there (matched by email or created)."""
        given = ConnectionCreateSerializer(data=request.data)
        given.is_valid(raise_exception=True)
        row = connections.connection_create(**given.validated_data)
        return Response(ConnectionSerializer(row).data, status=201)


class ConnectionDetailView(APIView):
    @extend_schema(responses={200: ConnectionSerializer, **ERRORS})
    def get(self, request: Request, connection_id: int) -> Response:
        return Response(ConnectionSerializer(connections.connection_get(connection_id=connection_id)).data)

    @extend_schema(request=ConnectionUpdateSerializer, responses={200: ConnectionSerializer, **CONNECT_ERRORS})
    def patch(self, request: Request, connection_id: int) -> Response:
        """Rename, or reconnect with new credentials (they must reach the same account): a
        connection whose credentials were refused resumes and what waited is sent."""
        changes = ConnectionUpdateSerializer(data=request.data)
        changes.is_valid(raise_exception=True)
        row = connections.connection_get(connection_id=connection_id)
        return Response(
            ConnectionSerializer(connections.connection_update(connection=row, **changes.validated_data)).data
        )

    @extend_schema(responses={204: None, **ERRORS})
    def delete(self, request: Request, connection_id: int) -> Response:
        """Stop syncing with the account: its credentials are forgotten; links, dead letters,
        attempts and history are kept."""
        connections.connection_delete(connection=connections.connection_get(connection_id=connection_id))
        return Response(status=204)


class ConnectionPauseView(APIView):
    @extend_schema(request=None, responses={200: ConnectionSerializer, **ERRORS})
    def post(self, request: Request, connection_id: int) -> Response:
        """Nothing is sent to or read from the CRM; changes wait as they are (`paused` on contacts)."""
        row = connections.connection_get(connection_id=connection_id)
        return Response(ConnectionSerializer(connections.connection_pause(connection=row)).data)


class ConnectionResumeView(APIView):
    @extend_schema(request=None, responses={200: ConnectionSerializer, **ERRORS})
    def post(self, request: Request, connection_id: int) -> Response:
        """Active again: what waited is sent at once."""
        row = connections.connection_get(connection_id=connection_id)
        return Response(ConnectionSerializer(connections.connection_resume(connection=row)).data)
