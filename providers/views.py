"""The connected CRMs, seen through the API. Views parse, call one service, render."""

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.views import ERRORS, ErrorSerializer
from providers import remote_fields
from providers.serializers import RemoteFieldQuerySerializer, RemoteFieldSerializer

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
