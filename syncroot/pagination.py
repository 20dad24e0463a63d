"""Admin lists of millions of rows: no exact COUNT(*) per page view."""

from django.core.paginator import Paginator
from django.db import connection
from django.utils.functional import cached_property


class EstimatedCountPaginator(Paginator):
    """The planner's row estimate for a whole table, and for a filtered list a count that stops at
    COUNT_CAP (a filtered list pages through its first 1,000 rows: narrow it down for more)."""

    COUNT_CAP = 1_000

    @cached_property
    def count(self) -> int:
        query = self.object_list.query
        if not query.where:
            with connection.cursor() as cursor:
                cursor.execute(
                    "SELECT reltuples::bigint FROM pg_class WHERE oid = %s::regclass", [query.model._meta.db_table]
                )
                row = cursor.fetchone()
            if row and row[0] > self.COUNT_CAP:
                return int(row[0])
        return self.object_list.order_by()[: self.COUNT_CAP + 1].count()
