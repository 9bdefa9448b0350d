"""Hot-path statements built once per model and database instead of compiled by the ORM per call.

A worker finishing a no-op run and claiming the next one runs four small statements in one write
transaction; the ORM's Python work to build each (a QuerySet, a WHERE tree, a compiler, the
RETURNING rows turned into a model) was most of that transaction's time, and on SQLite every
other writer waits while a transaction is open. These helpers keep the SQL text per (database,
model, fields) and adapt every value through the model's own field (``get_db_prep_save``,
``get_db_prep_value``, the backend's and the field's converters on the way back), so what is
stored and read is what the ORM would store and read. Equality conditions only; for anything
else use the ORM.

- ``update(model, values, **where)``: ``UPDATE … SET … WHERE a = %s AND b = %s``, the row count.
- ``insert(obj)``: one INSERT of every concrete field of an unsaved instance (no signals are sent:
  only for models nothing listens to; its ``_state`` is marked saved).
- ``from_row(model, row)``: a model instance from a row of its concrete fields in declaration
  order (what ``RETURNING <every column>`` gives).
- ``columns(model)``: the quoted column list in that order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

from django.db import connection, models
from django.db.models.sql import Query

M = TypeVar("M", bound=models.Model)

_SQL: dict[tuple[Any, ...], str] = {}
_CONVERTERS: dict[tuple[str, type[models.Model]], dict[int, tuple[list[Any], Any]]] = {}


def _field(model: type[models.Model], name: str) -> models.Field[Any, Any]:
    field = model._meta.get_field(name)
    assert isinstance(field, models.Field) and field.concrete, f"{model.__name__}.{name} is not a column"
    return field


def columns(model: type[models.Model]) -> str:
    key = ("columns", connection.vendor, model)
    if key not in _SQL:
        quote = connection.ops.quote_name
        _SQL[key] = ", ".join(quote(str(f.column)) for f in model._meta.concrete_fields)
    return _SQL[key]


def update(model: type[models.Model], values: Mapping[str, Any], **where: Any) -> int:
    """``UPDATE <table> SET <values> WHERE <where, all equal>``; how many rows changed."""
    key = ("update", connection.vendor, model, tuple(values), tuple(where))
    sql = _SQL.get(key)
    if sql is None:
        quote = connection.ops.quote_name
        sets = ", ".join(f"{quote(str(_field(model, n).column))} = %s" for n in values)
        conditions = " AND ".join(f"{quote(str(_field(model, n).column))} = %s" for n in where)
        sql = _SQL[key] = f"UPDATE {quote(model._meta.db_table)} SET {sets} WHERE {conditions}"  # noqa: S608
    params = [_field(model, n).get_db_prep_save(v, connection) for n, v in values.items()]
    params += [_field(model, n).get_db_prep_value(v, connection, prepared=False) for n, v in where.items()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return int(cursor.rowcount)


def insert(obj: models.Model) -> None:
    """INSERT every concrete field of ``obj`` (its primary key must be set: no id is read back)."""
    model = type(obj)
    fields: Sequence[models.Field[Any, Any]] = model._meta.concrete_fields
    key = ("insert", connection.vendor, model)
    sql = _SQL.get(key)
    if sql is None:
        marks = ", ".join(["%s"] * len(fields))
        table = connection.ops.quote_name(model._meta.db_table)
        sql = _SQL[key] = f"INSERT INTO {table} ({columns(model)}) VALUES ({marks})"  # noqa: S608
    params = [f.get_db_prep_save(f.pre_save(obj, True), connection) for f in fields]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
    obj._state.adding, obj._state.db = False, connection.alias


def from_row(model: type[M], row: Sequence[Any]) -> M:
    """The instance a row of ``columns(model)`` describes, converted as a query would convert it."""
    key = (connection.vendor, model)
    converters = _CONVERTERS.get(key)
    if converters is None:
        compiler = Query(model).get_compiler(connection=connection)
        table = model._meta.db_table
        converters = _CONVERTERS[key] = compiler.get_converters(
            [f.get_col(table) for f in model._meta.concrete_fields]
        )
    values = list(row)
    for index, (functions, expression) in converters.items():
        value = values[index]
        for convert in functions:
            value = convert(value, expression, connection)
        values[index] = value
    return model.from_db(connection.alias, [f.attname for f in model._meta.concrete_fields], values)
