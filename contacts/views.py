"""Contacts API. Views parse, call one service, render; the logic lives in services/selectors."""

from django.conf import settings
from django.urls import reverse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import serializers, status
from rest_framework.pagination import CursorPagination
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts import field_services, selectors, services
from contacts.fields import builtin_fields
from contacts.models import Contact
from contacts.serializers import (
    BATCH_MAX_CONTACTS,
    ContactBatchInputSerializer,
    ContactInputSerializer,
    ContactSerializer,
    FieldCreateSerializer,
    FieldDeletedSerializer,
    FieldPurgeSerializer,
    FieldSerializer,
    FieldUpdateSerializer,
    contact_input_plain,
    field_output,
)
from providers.lifecycle import contact_restore, contacts_merge
from providers.provenance import contact_history
from providers.services import contact_resync
from syncroot.errors import ApplicationError, PreconditionFailed


class ErrorSerializer(serializers.Serializer):
    """The body of every error response."""

    code = serializers.CharField()
    message = serializers.CharField()
    details = serializers.JSONField()


# Every status the API can answer with, on every operation (all share the error body): the
# framework's own refusals (405, 406, 413, 415, 503) are as much part of the contract as ours.
ERRORS = {code: OpenApiResponse(response=ErrorSerializer, description=text) for code, text in {
    400: "Validation error", 401: "Missing or invalid token", 404: "Not found", 405: "Method not allowed",
    406: "Only application/json can be returned", 409: "Conflict: a duplicate email, or a field's values or uses",
    410: "Merged into another contact (`details.merged_into`)", 412: "Stale If-Match",
    413: "Request body too large", 415: "Body is not application/json",
    422: "Idempotency-Key reused with another body", 429: "Throttled (see Retry-After)",
    503: "Database or broker unavailable (see Retry-After)",
}.items()}  # fmt: skip


class GoneDetailsSerializer(serializers.Serializer):
    id = serializers.UUIDField(help_text="The id asked for (for a merge, the contact that is gone).")
    merged_into = serializers.UUIDField(help_text="The live contact it was merged into (later merges followed).")


class GoneErrorSerializer(serializers.Serializer):
    """A merged-away contact's answer."""

    code = serializers.CharField(help_text="`gone`")
    message = serializers.CharField()
    details = GoneDetailsSerializer()


# Every operation on one contact: an id merged into another answers 410 with where it went, and
# changes nothing (its tombstone stays as the merge left it); an unknown, deleted or erased id, 404.
GONE_EXAMPLE = OpenApiExample("merged", response_only=True, status_codes=["410"], value={
    "code": "gone", "message": "Contact was merged into another.",
    "details": {"id": "0f0e4a3c-5d1b-4c55-9f6e-1c2d3e4f5a6b", "merged_into": "7b1d9c2e-3f4a-4b5c-8d6e-9f0a1b2c3d4e"},
})  # fmt: skip
CONTACT_ERRORS = {
    **ERRORS,
    404: OpenApiResponse(response=ErrorSerializer, description="No such contact: unknown, deleted or erased"),
    410: OpenApiResponse(
        response=GoneErrorSerializer,
        description="The contact was merged into another: `details.merged_into` is the live contact it lives on in",
        examples=[GONE_EXAMPLE],
    ),
}
IF_MATCH = OpenApiParameter("If-Match", OpenApiTypes.STR, OpenApiParameter.HEADER, description='ETag, e.g. "3"')


def etag(contact: Contact) -> str:
    return f'"{contact.version}"'


def expected_version(request: Request) -> int | None:
    """The version named by If-Match (None when absent or `*`)."""
    header = request.headers.get("If-Match", "").strip()
    if not header or header == "*":
        return None
    value = header.removeprefix("W/").strip().strip('"')
    if not value.isdigit():
        raise PreconditionFailed("If-Match must be an ETag returned by this API.", details={"if_match": header})
    return int(value)


IDEMPOTENCY_KEY = OpenApiParameter("Idempotency-Key", {"type": "string", "maxLength": 255}, OpenApiParameter.HEADER)


def idempotency_key(request: Request) -> str:
    key = request.headers.get("Idempotency-Key", "").strip()
    if len(key) > 255:
        raise ApplicationError("Idempotency-Key must be at most 255 characters.")
    return key


def contact_response(contact: Contact, *, status_code: int = status.HTTP_200_OK) -> Response:
    return Response(ContactSerializer(contact).data, status=status_code, headers={"ETag": etag(contact)})


class ContactPagination(CursorPagination):
    page_size = settings.API_PAGE_SIZE
    ordering = ("-created_at", "-id")
    page_size_query_param = "page_size"
    max_page_size = 500


class ContactFilterSerializer(serializers.Serializer):
    email = serializers.CharField(required=False, max_length=254)
    updated_since = serializers.DateTimeField(required=False)
    cursor = serializers.CharField(required=False)
    page_size = serializers.IntegerField(required=False, min_value=1, max_value=500)


class ContactListView(APIView):
    # Declared on the view (not only used in `get`) so the OpenAPI schema shows the paginated envelope.
    pagination_class = ContactPagination

    @extend_schema(
        parameters=[ContactFilterSerializer],
        responses={200: ContactSerializer(many=True), **ERRORS},
        description="Filter by custom values with `custom.<key>=<value>` (e.g. `?custom.tier=gold&custom.seats=40`): "
        "numbers and booleans as JSON (`40`, `true`), the rest as text; an unknown key or a value that does not fit "
        "its field is a 400 naming `custom.<key>`. Served by an index.",
    )
    def get(self, request: Request) -> Response:
        filters = ContactFilterSerializer(data=request.query_params)
        filters.is_valid(raise_exception=True)
        custom = {
            name.removeprefix("custom."): value
            for name, value in request.query_params.items()
            if name.startswith("custom.")
        }
        queryset = selectors.contact_list(
            email=filters.validated_data.get("email"),
            updated_since=filters.validated_data.get("updated_since"),
            custom=custom,
        )
        paginator = self.pagination_class()
        page = paginator.paginate_queryset(queryset, request, view=self)
        return paginator.get_paginated_response(ContactSerializer(page, many=True).data)

    @extend_schema(
        request=ContactInputSerializer,
        responses={201: ContactSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_KEY],
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)

        def create() -> tuple[int, dict, Contact]:
            data = contact_input_plain(request.data)
            if data is None:  # something to trim or refuse: the serializer says what
                serializer = ContactInputSerializer(data=request.data)
                serializer.is_valid(raise_exception=True)
                data = serializer.validated_data
            contact = services.contact_create(data=data)
            # Just created: each link is pending with nothing sent yet, which is what the sync state
            # shows for a CRM without a link, so the links need not be read back.
            return status.HTTP_201_CREATED, ContactSerializer(contact, context={"links": ()}).data, contact

        if key:
            code, body, _ = services.contact_create_idempotent(
                token=request.auth, key=key, payload=request.data, create=create
            )
        else:
            code, body, _ = create()
        # The ETag of the body sent, not of the contact now: a replay answers the first response, and
        # an If-Match built from it must not skip a change made since.
        headers = {"Location": reverse("contact-detail", args=[body["id"]]), "ETag": f'"{body["version"]}"'}
        return Response(body, status=code, headers=headers)


class ContactBatchSerializer(serializers.Serializer):
    contacts = ContactSerializer(many=True)


class ContactBatchView(APIView):
    @extend_schema(
        request=ContactBatchInputSerializer,
        responses={201: ContactBatchSerializer, **ERRORS},
        parameters=[IDEMPOTENCY_KEY],
        description=f"Create up to {BATCH_MAX_CONTACTS} contacts, all or none, in the order given. "
        "Emails must be distinct and not held by a live contact (409 names each one held). "
        "The CRMs receive them in batches.",
    )
    def post(self, request: Request) -> Response:
        key = idempotency_key(request)

        def create() -> tuple[int, dict, None]:
            serializer = ContactBatchInputSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            contacts = services.contact_create_many(items=serializer.validated_data["contacts"])
            body = {"contacts": ContactSerializer(contacts, many=True, context={"links": ()}).data}
            return status.HTTP_201_CREATED, body, None

        if key:
            code, body, _ = services.contact_create_idempotent(
                token=request.auth, key=key, payload=request.data, create=create
            )
        else:
            code, body, _ = create()
        return Response(body, status=code)


class ContactDetailView(APIView):
    @extend_schema(responses={200: ContactSerializer, **CONTACT_ERRORS})
    def get(self, request: Request, contact_id: str) -> Response:
        return contact_response(selectors.contact_get(contact_id=contact_id))

    @extend_schema(
        request=ContactInputSerializer, responses={200: ContactSerializer, **CONTACT_ERRORS}, parameters=[IF_MATCH]
    )
    def put(self, request: Request, contact_id: str) -> Response:
        return self._update(request, contact_id, partial=False)

    @extend_schema(request=ContactInputSerializer(partial=True), responses={200: ContactSerializer, **CONTACT_ERRORS},
                   parameters=[IF_MATCH])  # fmt: skip
    def patch(self, request: Request, contact_id: str) -> Response:
        return self._update(request, contact_id, partial=True)

    @extend_schema(responses={204: None, **CONTACT_ERRORS}, parameters=[IF_MATCH])
    def delete(self, request: Request, contact_id: str) -> Response:
        services.contact_delete(contact_id=contact_id, expected_version=expected_version(request))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, contact_id: str, *, partial: bool) -> Response:
        serializer = ContactInputSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        contact = services.contact_update(
            contact_id=contact_id,
            data=serializer.validated_data,
            partial=partial,
            expected_version=expected_version(request),
        )
        contact = selectors.contact_get(contact_id=contact.pk)  # fresh sync state for the response
        return contact_response(contact)


class ContactSyncView(APIView):
    @extend_schema(request=None, responses={202: ContactSerializer, **CONTACT_ERRORS})
    def post(self, request: Request, contact_id: str) -> Response:
        """Queue the contact's current state for every connected CRM again."""
        contact = selectors.contact_get(contact_id=contact_id)
        contact_resync(contact=contact)
        return contact_response(selectors.contact_get(contact_id=contact.pk), status_code=status.HTTP_202_ACCEPTED)


class FieldChangeSerializer(serializers.Serializer):
    value = serializers.JSONField(allow_null=True)
    source = serializers.CharField(help_text="`api`, `operator`, `backfill`, or the CRM: `salesforce`, `hubspot`, …")
    changed_at = serializers.DateTimeField()


class FieldHistorySerializer(serializers.Serializer):
    value = serializers.JSONField(allow_null=True)
    source = serializers.CharField(
        allow_null=True, help_text="Where the current value came from (null: before the log)"
    )
    changed_at = serializers.DateTimeField(allow_null=True)
    changes = FieldChangeSerializer(many=True, help_text="The field's last changes, newest first")


class ContactHistorySerializer(serializers.Serializer):
    id = serializers.UUIDField()
    fields = serializers.DictField(child=FieldHistorySerializer(), help_text="By field: built-ins, then custom keys")


class ContactHistoryView(APIView):
    @extend_schema(responses={200: ContactHistorySerializer, **CONTACT_ERRORS})
    def get(self, request: Request, contact_id: str) -> Response:
        """Where each field's value came from: its source (the API, an operator, a CRM, a backfill), when,
        and its last changes."""
        contact = selectors.contact_get(contact_id=contact_id)
        body = {"id": contact.pk, "fields": contact_history(contact=contact)}
        return Response(ContactHistorySerializer(body).data)


class ContactMergeSerializer(serializers.Serializer):
    other_id = serializers.UUIDField(help_text="The contact merged into this one (it becomes a tombstone).")


class ContactMergeView(APIView):
    @extend_schema(request=ContactMergeSerializer, responses={200: ContactSerializer, **CONTACT_ERRORS})
    def post(self, request: Request, contact_id: str) -> Response:
        """Merge another contact into this one: this one keeps its values and takes the other's where
        it has none; the other answers `410` with `merged_into` from then on. Each CRM's records of the
        two are merged there with the CRM's own merge. Repeating a merge that happened answers 200 with
        the survivor; either contact merged into another answers `410` (`details.id` is that one)."""
        serializer = ContactMergeSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        contact = contacts_merge(survivor_id=contact_id, other_id=serializer.validated_data["other_id"])
        return contact_response(selectors.contact_get(contact_id=contact.pk))


class ContactRestoreView(APIView):
    @extend_schema(request=None, responses={200: ContactSerializer, **CONTACT_ERRORS})
    def post(self, request: Request, contact_id: str) -> Response:
        """Bring a deleted contact back (same id, `version` bumped) and on to every CRM. A live contact
        answers 200 as it is; a merged-away one `410` (it lives on in `merged_into`); an erased one `404`;
        `409` when another contact holds its email by now."""
        contact = contact_restore(contact_id=contact_id)
        return contact_response(selectors.contact_get(contact_id=contact.pk))


class FieldListView(APIView):
    @extend_schema(responses={200: FieldSerializer(many=True), **ERRORS})
    def get(self, request: Request) -> Response:
        """Every field of a contact: the six built-ins (`builtin: true`), then the custom fields by key."""
        return Response(builtin_fields() + [field_output(field) for field in selectors.custom_field_list()])

    @extend_schema(request=FieldCreateSerializer, responses={201: FieldSerializer, **ERRORS})
    def post(self, request: Request) -> Response:
        """Add a custom field; its values go in each contact's `custom` object under `key`."""
        serializer = FieldCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        field = field_services.custom_field_create(**serializer.validated_data)
        headers = {"Location": reverse("field-detail", args=[field.key])}
        return Response(field_output(field), status=status.HTTP_201_CREATED, headers=headers)


class FieldDetailView(APIView):
    @extend_schema(request=FieldUpdateSerializer, responses={200: FieldSerializer, **ERRORS})
    def patch(self, request: Request, key: str) -> Response:
        """Change a custom field's label, options or max_length. A change that values contacts hold
        would no longer fit is refused (409 `field_values_conflict`, with how many contacts)."""
        serializer = FieldUpdateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        field = field_services.custom_field_update(key=key, changes=serializer.validated_data)
        return Response(field_output(field))

    @extend_schema(
        parameters=[FieldPurgeSerializer],
        responses={204: None, 200: FieldDeletedSerializer, **ERRORS},
    )
    def delete(self, request: Request, key: str) -> Response:
        """Delete a custom field: 409 `field_has_values` while contacts hold values of it, unless
        `?purge=true`, which removes them and answers 200 with how many. Built-ins: 409 `builtin_field`."""
        options = FieldPurgeSerializer(data=request.query_params)
        options.is_valid(raise_exception=True)
        purge = options.validated_data["purge"]
        purged = field_services.custom_field_delete(key=key, purge=purge)
        if purge:
            return Response({"key": key, "purged": purged})
        return Response(status=status.HTTP_204_NO_CONTENT)
