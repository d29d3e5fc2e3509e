"""Arrow schemas derived from the pydantic records, so the models stay the only place a field is declared."""

from __future__ import annotations

import types
import typing
from datetime import datetime
from enum import Enum
from pathlib import PurePath
from typing import Any, Iterable

import pyarrow as pa
from pydantic import BaseModel

from schemas.records import SCHEMA_VERSION

VERSION_KEY = b"saven.schema_version"
RECORD_KEY = b"saven.record"

_SCALARS: dict[type, pa.DataType] = {
    bool: pa.bool_(),  # before int: bool is a subclass of int
    int: pa.int64(),
    float: pa.float64(),
    str: pa.string(),
    datetime: pa.timestamp("us", tz="UTC"),
}


def _arrow_type(annotation: Any) -> tuple[pa.DataType, bool]:
    """(Arrow type, nullable) of one annotation."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _arrow_type(args[0])
    if origin in (typing.Union, types.UnionType):
        members = [a for a in args if a is not type(None)]
        if len(members) != 1:
            raise TypeError(f"only `X | None` unions map to Arrow, not {annotation!r}")
        return _arrow_type(members[0])[0], True
    if origin is typing.Literal:
        if not all(isinstance(a, str) for a in args):
            raise TypeError(f"only string literals map to Arrow, not {annotation!r}")
        return pa.string(), False
    if origin is list:
        item_type, item_nullable = _arrow_type(args[0])
        return pa.list_(pa.field("item", item_type, nullable=item_nullable)), False
    if isinstance(annotation, type):
        if issubclass(annotation, BaseModel):
            return pa.struct(_fields(annotation)), False
        if issubclass(annotation, Enum):
            if not issubclass(annotation, str):
                raise TypeError(f"only str enums map to Arrow, not {annotation.__name__}")
            return pa.string(), False
        if issubclass(annotation, PurePath):
            return pa.string(), False
        for py_type, arrow_type in _SCALARS.items():
            if issubclass(annotation, py_type):
                return arrow_type, False
    raise TypeError(f"no Arrow mapping for {annotation!r}")


def _fields(model_cls: type[BaseModel]) -> list[pa.Field]:
    fields = []
    for name, info in model_cls.model_fields.items():
        try:
            arrow_type, nullable = _arrow_type(info.annotation)
        except TypeError as exc:
            raise TypeError(f"{model_cls.__name__}.{name}: {exc}") from None
        fields.append(pa.field(name, arrow_type, nullable=nullable))
    return fields


def arrow_schema(model_cls: type[BaseModel]) -> pa.Schema:
    """The Arrow schema of a record class, with the schema version and record name in its metadata."""
    return pa.schema(_fields(model_cls),
                     metadata={VERSION_KEY: SCHEMA_VERSION.encode(), RECORD_KEY: model_cls.__name__.encode()})


def _plain(value: Any) -> Any:
    """A model_dump(mode="python") value as Arrow takes it: enums as their values, paths as strings."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def to_row(record: BaseModel) -> dict[str, Any]:
    return _plain(record.model_dump(mode="python"))


def to_table(records: Iterable[BaseModel], model_cls: type[BaseModel]) -> pa.Table:
    return pa.Table.from_pylist([to_row(r) for r in records], schema=arrow_schema(model_cls))


def from_table(table: pa.Table, model_cls: type[BaseModel]) -> list[BaseModel]:
    return [model_cls.model_validate(row) for row in table.to_pylist()]
