"""CSV export of an admin list as filtered: the same filters, search and order as the page shows."""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import Any

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, StreamingHttpResponse
from django.urls import path

CHUNK = 2000
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def _cell(value: Any) -> str:
    """A spreadsheet must not run a CRM's text as a formula."""
    text = "" if value is None else str(value)
    return "'" + text if text.startswith(_FORMULA_STARTS) else text


class _Echo:
    def write(self, value: str) -> str:
        return value


class CsvExportMixin:
    """`csv_header` and `csv_rows(obj)` (one object may give several rows) describe the file."""

    change_list_template = "admin/providers/change_list_export.html"
    csv_header: tuple[str, ...] = ()
    csv_filename = "export.csv"

    def csv_rows(self, obj: Any) -> Iterable[Iterable[Any]]:
        """One row of the object's attributes named by the header; an admin whose file says
        more (several rows per object, values from related rows) gives its own."""
        yield [getattr(obj, name) for name in self.csv_header]

    def get_urls(self):
        opts = self.model._meta
        export = path(
            "export.csv",
            self.admin_site.admin_view(self.csv_export),
            name=f"{opts.app_label}_{opts.model_name}_export",
        )
        return [export, *super().get_urls()]

    def csv_export(self, request: HttpRequest) -> StreamingHttpResponse:
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        queryset = self.get_changelist_instance(request).get_queryset(request)
        writer = csv.writer(_Echo())

        def lines() -> Iterator[str]:
            yield writer.writerow(self.csv_header)
            for obj in queryset.iterator(chunk_size=CHUNK):
                for row in self.csv_rows(obj):
                    yield writer.writerow([_cell(value) for value in row])

        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8")
        response["Content-Disposition"] = f'attachment; filename="{self.csv_filename}"'
        return response
