"""Admin change lists that cost the same at 10,000 rows as at 1,000,000.

Django's change list counts every matching row for its paginator and reads the distinct values of
each `list_filter` field from the whole table: both scan the table, so a page of 100 rows gets
slower as the table grows. Here the count is the planner's estimate once it is large (exact below
ESTIMATE_FROM rows, where counting is cheap), and a filter's values come from a loose index scan
(one index probe per distinct value, not one row per row).
"""

import json

from django.contrib import admin
from django.core.paginator import Paginator
from django.db import connections
from django.utils.functional import cached_property

# Below this many rows (by the planner's estimate) the exact count is cheap enough to show.
ESTIMATE_FROM = 10_000


def estimated_count(queryset) -> int:
    """The planner's row estimate for `queryset`, exact when that is under ESTIMATE_FROM."""
    sql, params = queryset.query.sql_with_params()
    with connections[queryset.db].cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    estimate = int(plan[0]["Plan"]["Plan Rows"])
    return estimate if estimate >= ESTIMATE_FROM else queryset.count()


class EstimatedCountPaginator(Paginator):
    """Counts a large result by the planner's estimate: the page links are approximate, the rows not."""

    @cached_property
    def count(self) -> int:
        object_list = self.object_list
        if hasattr(object_list, "query"):
            return estimated_count(object_list.order_by())
        return len(object_list)


class ScaledAdmin(admin.ModelAdmin):
    """A ModelAdmin whose change list stays flat as its table grows (see the module's docstring)."""

    paginator = EstimatedCountPaginator
    show_full_result_count = False


class DistinctValuesFilter(admin.AllValuesFieldListFilter):
    """`list_filter` values of an indexed column by a loose index scan instead of SELECT DISTINCT.

    The column must lead an index (its own, or a composite one) for the scan to be cheap.
    """

    def __init__(self, field, request, params, model, model_admin, field_path):
        super().__init__(field, request, params, model, model_admin, field_path)
        table, column = model._meta.db_table, field.column
        # Each step finds the next value above the last one through the index.
        sql = (
            f'WITH RECURSIVE t(v) AS ((SELECT "{column}" FROM "{table}" WHERE "{column}" IS NOT NULL '
            f'ORDER BY "{column}" LIMIT 1) UNION ALL SELECT (SELECT "{column}" FROM "{table}" '
            f'WHERE "{column}" > t.v ORDER BY "{column}" LIMIT 1) FROM t WHERE t.v IS NOT NULL) '
            "SELECT v FROM t WHERE v IS NOT NULL"
        )
        with connections[model._default_manager.db].cursor() as cursor:
            cursor.execute(sql)
            self.lookup_choices = [row[0] for row in cursor.fetchall()]
