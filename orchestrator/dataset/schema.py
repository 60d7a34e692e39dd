"""The clip table's column types: the grammar models declare their outputs in, the columns every row has, and
the inference that types a stage whose model declares nothing.

    type   := primitive | list<type> | fixed_size_list<type>[n] | struct<name: type, ...>
    primitive := string | bool | int8 | int16 | int32 | int64 | uint8 | ... | float32 | float64 | binary

A stage's column is a struct of its result fields: declared fields keep their declared type; any other field
is inferred from the values seen and only ever widened where it was unknown (an empty list's element, a field
always null so far), so every part of a table has one schema.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa

PRIMITIVES: dict[str, pa.DataType] = {
    "string": pa.string(), "bool": pa.bool_(), "binary": pa.binary(),
    "int8": pa.int8(), "int16": pa.int16(), "int32": pa.int32(), "int64": pa.int64(),
    "uint8": pa.uint8(), "uint16": pa.uint16(), "uint32": pa.uint32(), "uint64": pa.uint64(),
    "float16": pa.float16(), "float32": pa.float32(), "float64": pa.float64(), "null": pa.null(),
}
_NAMES = {value: name for name, value in PRIMITIVES.items()}
_TOKEN = re.compile(r"\s*(?:(?P<word>[A-Za-z_][A-Za-z0-9_]*)|(?P<number>\d+)|(?P<punct>[<>\[\],:]))")

ERROR_TYPE = pa.struct([("stage", pa.string()), ("reason", pa.string())])
TRUNCATION_TYPE = pa.struct([("decoded_frames", pa.int64()), ("declared_frames", pa.int64()),
                             ("decoded_s", pa.float64()), ("declared_s", pa.float64())])
BASE_COLUMNS: tuple[tuple[str, pa.DataType], ...] = (
    ("clip_id", pa.string()), ("video_id", pa.string()), ("video", pa.string()), ("fps", pa.float64()),
    ("width", pa.int32()), ("height", pa.int32()), ("video_frames", pa.int64()), ("clip_index", pa.int32()),
    ("start_frame", pa.int64()), ("end_frame", pa.int64()), ("frames", pa.int64()), ("start_s", pa.float64()),
    ("end_s", pa.float64()), ("path", pa.string()), ("kept", pa.bool_()), ("filtered_by", pa.list_(pa.string())),
    ("errors", pa.list_(ERROR_TYPE)), ("duplicate_of", pa.string()), ("truncated", TRUNCATION_TYPE),
    ("provenance", pa.string()),
)
"""What every row holds, whatever the stages; null where it does not apply (see docs/dataset.md)."""
BASE_NAMES = frozenset(name for name, _ in BASE_COLUMNS)


class TypeSyntaxError(ValueError):
    """A declared output type that the grammar does not read."""


def parse_type(text: str) -> pa.DataType:
    """The Arrow type a declaration string names, e.g. `list<struct<text: string, score: float32>>`."""
    tokens = [m.group(m.lastgroup or "") for m in _TOKEN.finditer(text)]
    if "".join(tokens) != re.sub(r"\s+", "", text):
        raise TypeSyntaxError(f"{text!r} has characters the type grammar does not use")
    parsed, rest = _parse(tokens, text)
    if rest:
        raise TypeSyntaxError(f"{text!r} has {''.join(rest)!r} after a complete type")
    return parsed


def _parse(tokens: list[str], text: str) -> tuple[pa.DataType, list[str]]:
    if not tokens:
        raise TypeSyntaxError(f"{text!r} ends before its type does")
    head, rest = tokens[0], tokens[1:]
    if head in PRIMITIVES:
        return PRIMITIVES[head], rest
    if head in ("list", "fixed_size_list"):
        item, rest = _parse(_expect(rest, "<", text), text)
        rest = _expect(rest, ">", text)
        if head == "list":
            return pa.list_(item), rest
        if rest[:1] != ["["] or not rest[1:2] or not rest[1].isdigit() or int(rest[1]) < 1:
            raise TypeSyntaxError(f"{text!r}: fixed_size_list<...> needs its length as [n], n >= 1")
        return pa.list_(item, int(rest[1])), _expect(rest[2:], "]", text)
    if head == "struct":
        fields: list[pa.Field] = []
        rest = _expect(rest, "<", text)
        while True:
            if not rest or not re.fullmatch(r"[A-Za-z_]\w*", rest[0]):
                raise TypeSyntaxError(f"{text!r}: a struct field needs a name, then ': type'")
            name = rest[0]
            field_type, rest = _parse(_expect(rest[1:], ":", text), text)
            fields.append(pa.field(name, field_type))
            if rest[:1] == [","]:
                rest = rest[1:]
                continue
            return pa.struct(fields), _expect(rest, ">", text)
    raise TypeSyntaxError(f"{text!r}: {head!r} is not a type (known: {', '.join(PRIMITIVES)}, list<T>, "
                          f"fixed_size_list<T>[n], struct<name: T, ...>)")


def _expect(tokens: list[str], token: str, text: str) -> list[str]:
    if tokens[:1] != [token]:
        where = repr("".join(tokens)) if tokens else "the end"
        raise TypeSyntaxError(f"{text!r}: expected {token!r} at {where}")
    return tokens[1:]


def format_type(data_type: pa.DataType) -> str:
    """The declaration string of a type (`parse_type`'s inverse)."""
    if data_type in _NAMES:
        return _NAMES[data_type]
    if pa.types.is_fixed_size_list(data_type):
        return f"fixed_size_list<{format_type(data_type.value_type)}>[{data_type.list_size}]"
    if pa.types.is_list(data_type):
        return f"list<{format_type(data_type.value_type)}>"
    if pa.types.is_struct(data_type):
        return "struct<" + ", ".join(f"{f.name}: {format_type(f.type)}" for f in data_type) + ">"
    raise TypeSyntaxError(f"{data_type} has no declaration string")


def infer_type(value: Any) -> pa.DataType:
    """The type of one result value as a model returned it; a 1-D float array is an embedding
    (fixed_size_list of its own float width), an empty list's element type is unknown (null)."""
    if value is None:
        return pa.null()
    if isinstance(value, (bool, np.bool_)):
        return pa.bool_()
    if isinstance(value, (int, np.integer)):
        return pa.int64()
    if isinstance(value, (float, np.floating)):
        return pa.float64()
    if isinstance(value, str):
        return pa.string()
    if isinstance(value, np.ndarray):
        if value.ndim == 1 and value.size and value.dtype in (np.float32, np.float64):
            return pa.list_(pa.from_numpy_dtype(value.dtype), value.size)
        return infer_type(value.tolist())
    if isinstance(value, Mapping):  # Parquet has no struct without fields: an empty result is unknown so far
        return pa.struct([(str(k), infer_type(v)) for k, v in value.items()]) if value else pa.null()
    if isinstance(value, (list, tuple)):
        item = pa.null()
        for element in value:
            item = merge_types(item, infer_type(element))
        return pa.list_(item)
    return pa.string()


def merge_types(a: pa.DataType, b: pa.DataType, widen: bool = True) -> pa.DataType:
    """One type that holds values of both: unknown (null) parts take the other's; ints widen to floats;
    fixed-size lists of other lengths become lists; anything else that disagrees is held as JSON text.
    Without `widen` (`b` read back from JSON, which knows no float widths or list lengths) only unknown
    parts of `a` are filled."""
    if a == b or pa.types.is_null(b):
        return a
    if pa.types.is_null(a):
        return b
    if pa.types.is_struct(a) and pa.types.is_struct(b):
        names = list(dict.fromkeys([f.name for f in a] + [f.name for f in b]))
        return pa.struct([(n, merge_types(_field_type(a, n), _field_type(b, n), widen)) for n in names])
    if _is_list(a) and _is_list(b):
        item = merge_types(a.value_type, b.value_type, widen)
        if pa.types.is_fixed_size_list(a) and (not widen or (pa.types.is_fixed_size_list(b)
                                                              and a.list_size == b.list_size)):
            return pa.list_(item, a.list_size)
        return pa.list_(item)
    if not widen:
        return a
    if pa.types.is_integer(a) and pa.types.is_floating(b):
        return b
    if pa.types.is_floating(a) and (pa.types.is_integer(b) or pa.types.is_floating(b)):
        return a if a.bit_width >= getattr(b, "bit_width", 0) else b
    return pa.string()


def _field_type(struct: pa.StructType, name: str) -> pa.DataType:
    index = struct.get_field_index(name)
    return struct.field(index).type if index >= 0 else pa.null()


def _is_list(data_type: pa.DataType) -> bool:
    return pa.types.is_list(data_type) or pa.types.is_fixed_size_list(data_type)


def pin(inferred: pa.DataType, declared: Mapping[str, pa.DataType]) -> pa.DataType:
    """A stage's struct: its declared fields first, with their declared types, then any other field inferred."""
    rest = [f for f in inferred if f.name not in declared] if pa.types.is_struct(inferred) else []
    return pa.struct([*declared.items(), *((f.name, f.type) for f in rest)])


def evolve(schema: pa.Schema, rows: Iterable[Mapping[str, Any]],
           declared: Mapping[str, Mapping[str, pa.DataType]], widen: bool = True) -> pa.Schema:
    """`schema` grown to hold `rows`: a new column for each key it lacks (in the order first seen), an
    unknown part of an inferred type filled in (with `widen`, see `merge_types`, also widened to hold
    them); base columns and declared fields never change."""
    columns = {f.name: f.type for f in schema}
    for name, fields in declared.items():
        columns[name] = pin(columns.get(name, pa.null()), fields)
    for row in rows:
        for name, value in row.items():
            if name in BASE_NAMES:
                continue
            merged = merge_types(columns.get(name, pa.null()), infer_type(value), widen)
            columns[name] = pin(merged, declared[name]) if name in declared else merged
    base = dict(BASE_COLUMNS)
    return pa.schema([(name, base.get(name, data_type)) for name, data_type in
                      {**base, **{n: t for n, t in columns.items() if n not in base}}.items()])


def base_schema(declared: Mapping[str, Mapping[str, pa.DataType]]) -> pa.Schema:
    """The schema before any row: the base columns, then each declared stage."""
    return evolve(pa.schema([]), [], declared)


def schema_to_json(schema: pa.Schema) -> list[list[str]]:
    return [[f.name, format_type(f.type)] for f in schema]


def schema_from_json(data: Any) -> pa.Schema | None:
    """The recorded schema, or None when `data` is not one (torn by hand, or another layout's)."""
    try:
        return pa.schema([(str(name), parse_type(text)) for name, text in data])
    except (TypeError, ValueError):
        return None


def fingerprint(schema: pa.Schema) -> str:
    """A short hash of the schema: a table part records the one it was written with."""
    return hashlib.sha256(json.dumps(schema_to_json(schema)).encode()).hexdigest()[:16]
