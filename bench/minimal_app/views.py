"""The least a contact write must do: one transaction inserting the contact and its links, then
the same after-commit enqueue as the product. No authentication, throttling, validation,
duplicate check or response body beyond the id: what `POST /contacts` costs above this is the
price of those.

Its links go in through the ORM's bulk_create, as a plain Django endpoint would write them;
BENCH_MINIMAL_LINKS=product (`bench.api_write --minimal-links product`) writes them with the
product's own upsert instead, so the two endpoints differ by nothing but the API's layers."""

import os

from django.db import transaction
from django.utils import timezone
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contacts.models import SYNCED_FIELDS, Contact
from crm.registry import connected_providers
from providers.models import LinkStatus, ProviderLink
from providers.services import enqueue_forward, links_mark_pending_many

PRODUCT_LINKS = os.environ.get("BENCH_MINIMAL_LINKS", "orm") == "product"


class MinimalContactCreate(APIView):
    authentication_classes: list = []
    permission_classes: list = []
    throttle_classes: list = []

    def post(self, request: Request) -> Response:
        data = request.data
        values = {field: str(data.get(field, "")) for field in SYNCED_FIELDS}
        providers = connected_providers()
        now = timezone.now()
        stamp = now.isoformat()
        with transaction.atomic():
            # The same row as the product writes (field_times included), so the inserts cost the same.
            contact = Contact.objects.create(**values, field_times={f: stamp for f in SYNCED_FIELDS})
            if PRODUCT_LINKS:
                links_mark_pending_many(contacts=[contact])  # with the same enqueue after commit
            else:
                ProviderLink.objects.bulk_create(
                    [
                        ProviderLink(contact=contact, provider=name, status=LinkStatus.PENDING, pending_since=now)
                        for name in providers
                    ]
                )
                transaction.on_commit(lambda: enqueue_forward(providers=providers), robust=True)
        return Response({"id": str(contact.pk)}, status=201)
