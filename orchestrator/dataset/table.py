"""The clip table: `<out>/clips.parquet/`, one Parquet part per finished video, all of one schema.

    <out>/.parts/<video id>.json            the rows (what resume trusts)
    <out>/clips.parquet/_schema.json        the table's schema, recorded as it is first known and only grown
    <out>/clips.parquet/<video id>.parquet  the same rows, typed; records the hash of the rows and the schema
                                            it was written from, so a part that is missing, torn, or older
                                            than its rows or the schema is rewritten from `.parts`

Each part replaces the one before atomically, so a resumed run or a rerun never holds a video's rows twice.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from orchestrator.atomic import atomic_write_bytes, atomic_write_text
from orchestrator.dataset.provenance import Provenance
from orchestrator.dataset.schema import (
    BASE_NAMES,
    base_schema,
    evolve,
    fingerprint,
    format_type,
    parse_type,
    schema_from_json,
    schema_to_json,
)
from orchestrator.errors import ConfigError, PipelineError
from orchestrator.pipeline.output.parts import Part

TABLE_DIR = "clips.parquet"
SCHEMA_FILE = "_schema.json"
"""Beside the parts; pyarrow and pandas skip names starting with `_` when they read the folder."""
_ROWS_KEY, _SCHEMA_KEY = b"orchestrator.rows", b"orchestrator.schema"


@dataclass(frozen=True)
class TableSpec:
    """What the table knows of a run's stages: each clip model stage's declared outputs, in stage order
    (None: inferred from its results), and the provenance its rows reference (None: each row names its own,
    as a redo records them)."""

    outputs: Mapping[str, Mapping[str, str] | None] = field(default_factory=dict)
    provenance: Provenance | None = Provenance()

    def __post_init__(self) -> None:
        if clash := sorted(set(self.outputs) & BASE_NAMES):
            raise ConfigError(f"stage {clash[0]!r} has the name of a column every clip row has; rename the stage "
                              f"(taken: {', '.join(sorted(BASE_NAMES))})")
        declared_types(self.outputs)  # a declaration the grammar does not read fails here, before any write


def declared_types(outputs: Mapping[str, Mapping[str, str] | None]) -> dict[str, dict[str, pa.DataType]]:
    """Each stage's declared result fields as Arrow types (stages that declare nothing are inferred)."""
    declared = {}
    for stage, fields in outputs.items():
        if fields:
            try:
                declared[stage] = {name: parse_type(text) for name, text in fields.items()}
            except ValueError as exc:
                raise ConfigError(f"stage {stage!r}: declared outputs: {exc}") from None
    return declared


INFERRED = TableSpec()
"""A table whose stages are all typed by their results, with no model provenance."""


def is_kept(row: Mapping[str, Any]) -> bool:
    """A row whose clip the folder keeps (a duplicate that a `filter: false` dedup stage only marked is kept;
    one it filtered is not). Its file is in `clips/`, unless the run wrote none (`clips: {encode: none}`)."""
    return row.get("kept") is True


def rows_hash(rows: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()[:16]


class ClipTable:
    """Keeps `<out>/clips.parquet/` in step with the parts: a part per video, one schema for all."""

    def __init__(self, out_dir: Path, outputs: Mapping[str, Mapping[str, str] | None]) -> None:
        """`outputs`: each clip stage's declared outputs (None: inferred from its results)."""
        self.dir = out_dir / TABLE_DIR
        self.schema_path = self.dir / SCHEMA_FILE
        self.declared = declared_types(outputs)
        self.schema = evolve(read_schema(out_dir) or pa.schema([]), [], self.declared)
        self._written: dict[str, tuple[str, str]] = {}
        """(rows hash, schema fingerprint) of each part on disk."""

    def sync(self, parts: Mapping[str, Part]) -> None:
        """Rewrite every table part that is missing or stale, and drop those of videos no part holds."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in self.dir.glob("*.parquet"):
            if path.stem not in parts:
                path.unlink()
            else:
                self._written[path.stem] = _recorded(path)
        stale = [p for p in parts.values() if not self._current(p)]
        if self._grow((row for part in stale for row in part.rows), widen=False):
            stale = [p for p in parts.values() if not self._current(p)]
        for part in stale:
            self._write(part)
        self._save_schema()

    def add(self, part: Part, results: Iterable[Mapping[str, Any]] | None, parts: Mapping[str, Part]) -> None:
        """Write a video's part; `results` are its rows as the models returned them (numpy arrays still
        arrays, so an embedding is typed by its own length and width), None for rows read back from JSON.
        Should they grow the schema, the other parts are rewritten to it."""
        if self._grow(part.rows, widen=False) if results is None else self._grow(results):
            self.sync(parts)
        else:
            self._write(part)

    def _grow(self, rows: Iterable[Mapping[str, Any]], widen: bool = True) -> bool:
        grown = evolve(self.schema, rows, self.declared, widen)
        if grown.equals(self.schema):
            return False
        self.schema = grown
        self._save_schema()
        return True

    def _save_schema(self) -> None:
        recorded = schema_to_json(self.schema)
        with contextlib.suppress(OSError, ValueError):
            if json.loads(self.schema_path.read_text()) == recorded:
                return
        atomic_write_text(self.schema_path, json.dumps(recorded) + "\n")

    def _current(self, part: Part) -> bool:
        return self._written.get(part.video_id) == (rows_hash(part.rows), fingerprint(self.schema))

    def _write(self, part: Part) -> None:
        marks = (rows_hash(part.rows), fingerprint(self.schema))
        table = rows_table(part.video_id, part.rows, self.schema)
        table = table.replace_schema_metadata({_ROWS_KEY: marks[0].encode(), _SCHEMA_KEY: marks[1].encode()})
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        atomic_write_bytes(self.dir / f"{part.video_id}.parquet", sink.getvalue().to_pybytes())
        self._written[part.video_id] = marks


def _recorded(path: Path) -> tuple[str, str]:
    """The (rows hash, schema fingerprint) a table part was written from; a torn part records nothing."""
    try:
        metadata = pq.read_schema(path).metadata or {}
    except (OSError, pa.ArrowException):
        return ("", "")
    return (metadata.get(_ROWS_KEY, b"").decode(), metadata.get(_SCHEMA_KEY, b"").decode())


def rows_table(video_id: str, rows: list[dict[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows as a table of `schema`; a value its column cannot hold is a PipelineError naming both."""
    columns = []
    for column in schema:
        values = [conform(row.get(column.name), column.type) for row in rows]
        try:
            columns.append(pa.array(values, type=column.type))
        except (pa.ArrowException, OverflowError, TypeError) as exc:
            raise PipelineError(f"{video_id}: column {column.name!r} is {format_type(column.type)}, which cannot "
                                f"hold this video's values ({exc}); make the model's declared outputs match "
                                f"what it returns") from None
    return pa.Table.from_arrays(columns, schema=schema)


def conform(value: Any, data_type: pa.DataType) -> Any:
    """A JSON value shaped for its column: nested to the column's fields, and held as JSON text where the
    column is a string but the value is not (a field whose type differed between clips)."""
    if value is None or pa.types.is_null(data_type):
        return None
    if pa.types.is_string(data_type):
        return value if isinstance(value, str) else json.dumps(value)
    if pa.types.is_struct(data_type) and isinstance(value, dict):
        return {f.name: conform(value.get(f.name), f.type) for f in data_type}
    if (pa.types.is_list(data_type) or pa.types.is_fixed_size_list(data_type)) and isinstance(value, list):
        return [conform(v, data_type.value_type) for v in value]
    return value


def read_schema(out_dir: Path) -> pa.Schema | None:
    """The schema the folder's table records, if any."""
    try:
        return schema_from_json(json.loads((out_dir / TABLE_DIR / SCHEMA_FILE).read_text()))
    except (OSError, ValueError):
        return None


def read_table(out_dir: Path) -> pa.Table:
    """Every clip row of the folder's table (all parts, one schema), ordered by video id, then clip."""
    parts = sorted((out_dir / TABLE_DIR).glob("*.parquet"))
    schema = read_schema(out_dir) or base_schema({})
    tables = [pq.read_table(path) for path in parts]
    if not tables:
        return schema.empty_table()
    # a part older than the schema (a run stopped before rewriting it) still reads, widened to the others
    return pa.concat_tables(tables, promote_options="permissive").replace_schema_metadata(None)
