"""Many rows of one model in one `INSERT … SELECT unnest(…), unnest(…), …`: one array per column.

The ORM's bulk_create renders one placeholder per value, so 10,000 rows of 20 columns are a
statement of 200,000 parameters that psycopg2 quotes one by one and PostgreSQL parses as much.
Here each column is one array, and a column holding the same value in every row (a default, the
CRM's name, an import's timestamp) is sent once, as a plain parameter.

Arrays are cast to each column's type without its length (`varchar`, not `varchar(80)`): an
explicit cast to `varchar(80)` would cut a longer value silently, where the assignment to the
column refuses it as a plain INSERT does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from django.db import DEFAULT_DB_ALIAS, connections, models

_MODIFIERS = re.compile(r"\(.*\)")


def rows_insert(objs: Sequence[models.Model], *, on_conflict: str = "") -> None:
    """Insert `objs` (instances of one model, not saved yet) as `bulk_create` would: pre_save
    defaults (auto_now, auto_now_add) applied, the primary key left to the database when it is
    an auto field (which is then not read back). `on_conflict`: an `ON CONFLICT …` clause to append."""
    if not objs:
        return
    meta = type(objs[0])._meta
    connection = connections[DEFAULT_DB_ALIAS]  # once: the `connection` proxy is a lookup per use
    fields = [field for field in meta.concrete_fields if not isinstance(field, models.AutoField)]
    prepared = [[field.get_db_prep_save(field.pre_save(obj, add=True), connection) for obj in objs] for field in fields]
    constant = [_all_same(values) for values in prepared]
    if len(objs) > 1 and all(constant):
        constant[0] = False  # one array at least, or the SELECT gives one row
    columns, selected, params = [], [], []
    for field, values, same in zip(fields, prepared, constant, strict=True):
        kind = _MODIFIERS.sub("", field.db_type(connection) or "")
        columns.append(connection.ops.quote_name(field.column))
        if same:
            selected.append(f"%s::{kind}")
            params.append(values[0])
        else:
            selected.append(f"unnest(%s::{kind}[])")  # arrays of one length: unnested side by side
            params.append(values)
    table = connection.ops.quote_name(meta.db_table)
    sql = f"INSERT INTO {table} ({', '.join(columns)}) SELECT {', '.join(selected)} {on_conflict}"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    for obj in objs:
        obj._state.adding, obj._state.db = False, connection.alias


def _all_same(values: list[object]) -> bool:
    """Every value the same, compared as what is sent (an adapter such as Json by its value)."""
    first = _plain(values[0])
    return all(_plain(value) == first for value in values)


def _plain(value: object) -> object:
    adapted = getattr(value, "adapted", value)  # psycopg2's Json keeps the Python value here
    return (type(adapted), repr(adapted)) if isinstance(adapted, dict | list) else (type(adapted), adapted)
