"""What made a row: for each model stage, the model, its params, the hash of its env's lock and the hash of
its weights' manifest. Recorded once per distinct set in `<out>/provenance.jsonl` (append-only: one line per
id, never rewritten differently), and referenced from each row's `provenance` column by a content-hash id,
so a later run can tell which rows a changed lock, weights or params affect.

    {"id": "3f2a...", "stages": {"ocr": {"model": "models.rapidocr.RapidOCRTextReader", "env": "ocr",
     "lock": "9c1e...", "weights": {}, "params": {"min_score": 0.5}}, ...}}
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.atomic import atomic_write_text
from orchestrator.envs.spec import EnvSpec
from orchestrator.errors import OrchestratorError
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.manifest import Manifest

PROVENANCE_FILE = "provenance.jsonl"


@dataclass(frozen=True)
class StageProvenance:
    """One model stage as it ran."""

    model: str
    """The model's class path."""
    env: str
    lock: str | None
    """sha256 of the env's lock files (None: the env has none, e.g. a prebuilt one)."""
    weights: Mapping[str, str | None] = field(default_factory=dict)
    """sha256 of each weights set's manifest file list (None: not in this machine's cache, e.g. on Ray nodes)."""
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Provenance:
    """Every model stage of a run, by stage name; `id` is the hash of all of it."""

    stages: Mapping[str, StageProvenance] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {name: asdict(stage) for name, stage in self.stages.items()}

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(self.to_json(), sort_keys=True, default=str).encode()).hexdigest()[:16]

    @classmethod
    def from_json(cls, data: Any) -> Provenance | None:
        if not isinstance(data, dict):
            return None
        try:
            return cls({str(name): StageProvenance(**stage) for name, stage in data.items()})
        except TypeError:
            return None

    def changed_stages(self, other: Provenance) -> list[str]:
        """The stages of `other` whose model, env lock, weights or params differ from this record's (or that
        it lacks): the ones whose columns a rerun would change."""
        return [name for name, stage in other.stages.items() if self.stages.get(name) != stage]


def lock_hash(spec: EnvSpec) -> str | None:
    """sha256 of the env's lock files, whichever of them it has."""
    locks = [path for path in (spec.uv_lock, spec.conda_lock, spec.pixi_lock) if path.is_file()]
    if not locks:
        return None
    digest = hashlib.sha256()
    for path in locks:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()


def manifest_hash(manifest: Manifest | None) -> str | None:
    """sha256 of the files a weights manifest lists (path, size, sha256): the same weights, the same hash,
    wherever they were fetched from."""
    if manifest is None:
        return None
    files = sorted((f.path, f.size, f.sha256) for f in manifest.files)
    return hashlib.sha256(json.dumps(files).encode()).hexdigest()


def stage_provenance(model: str, spec: EnvSpec, weights_names: Iterable[str], params: Mapping[str, Any],
                     cache: WeightsCache | None = None) -> StageProvenance:
    """A model stage as this machine would run it: its env's lock and its weights as the local cache holds them."""
    cache = cache or WeightsCache()
    weights: dict[str, str | None] = {}
    for name in weights_names:
        weights[name] = None
        with contextlib.suppress(OrchestratorError, OSError):
            weights[name] = manifest_hash(cache.manifest(name))
    return StageProvenance(model, spec.name, lock_hash(spec), weights, dict(params))


def read_provenance(out_dir: Path) -> dict[str, Provenance]:
    """Every provenance record of the folder, by id (lines that are not one are skipped)."""
    records: dict[str, Provenance] = {}
    with contextlib.suppress(FileNotFoundError):
        for line in (out_dir / PROVENANCE_FILE).read_text().splitlines():
            with contextlib.suppress(ValueError):
                data = json.loads(line)
                record = Provenance.from_json(data.get("stages")) if isinstance(data, dict) else None
                if record is not None and data.get("id") == record.id:
                    records[record.id] = record
    return records


def record_provenance(out_dir: Path, provenance: Provenance) -> str:
    """Add the run's record to the folder unless an earlier run recorded the same; returns its id."""
    path = out_dir / PROVENANCE_FILE
    if provenance.id in read_provenance(out_dir):
        return provenance.id
    earlier = path.read_text() if path.exists() else ""
    if earlier and not earlier.endswith("\n"):
        earlier += "\n"
    line = json.dumps({"id": provenance.id, "stages": provenance.to_json()}, sort_keys=True, default=str)
    atomic_write_text(path, earlier + line + "\n")
    return provenance.id


def provenance_of(out_dir: Path, row: Mapping[str, Any]) -> Provenance | None:
    """The record a row's `provenance` column names, if the folder holds it."""
    return read_provenance(out_dir).get(str(row.get("provenance")))
