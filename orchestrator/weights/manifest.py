"""The manifest that makes a weights directory count as present, and the checks built on it.

    <root>/<org>/<repo>/
        config.json, model.safetensors, ...      the files, each fsynced before the manifest exists
        .orchestrator-manifest.json              written last, atomically: source, revision, files

A directory whose manifest is missing, unreadable, or lists a file that is absent or has another
size is not present. `verify_directory` goes further and re-hashes every file.
"""

from __future__ import annotations

import hashlib
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, ValidationError

from orchestrator.atomic import TMP_SUFFIX, fsync_tree
from orchestrator.errors import OrchestratorError

MANIFEST_NAME = ".orchestrator-manifest.json"
HUB_METADATA = PurePosixPath(".cache/huggingface")
"""Bookkeeping huggingface_hub keeps inside a download folder; not part of the weights."""
FORMAT = 1
CHUNK_BYTES = 1 << 20


class WeightsCorrupted(OrchestratorError):
    """A cached file no longer matches the size or sha256 its manifest recorded."""


class FileRecord(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    size: int
    sha256: str


class Manifest(BaseModel):
    """What one completed download holds and where it came from."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    format: int = FORMAT
    name: str
    source: str
    revision: str | None = None
    """The revision the config pinned (None: the source's default)."""
    commit: str | None = None
    """The exact commit the hub resolved `revision` to, when the source is the hub."""
    selection: tuple[str, ...] | None = None
    """The files asked for (None: every file the source had)."""
    files: tuple[FileRecord, ...]

    def paths(self) -> set[str]:
        return {record.path for record in self.files}

    def total_size(self) -> int:
        return sum(record.size for record in self.files)


def safe_relative_path(path: str, what: str) -> str:
    """`path` as a clean relative POSIX path; refuses `..`, absolute paths and empty parts.

    Every file name that comes from a config, a remote listing or a manifest goes through here
    before it is joined to a local directory, so nothing can write outside the cache.
    """
    parts = path.split("/")
    if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
        raise OrchestratorError(f"{what} {path!r} must be a relative path without '..', '.' or a leading '/'")
    return path


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def content_files(directory: Path) -> list[str]:
    """Relative paths of the weight files under `directory`: no manifest, temp files or hub bookkeeping."""
    found = []
    for path in directory.rglob("*"):
        relative = PurePosixPath(path.relative_to(directory).as_posix())
        if (not path.is_file() or relative.name == MANIFEST_NAME or relative.name.endswith(TMP_SUFFIX)
                or relative.parts[:2] == HUB_METADATA.parts):
            continue
        found.append(str(relative))
    return sorted(found)


def read_manifest(directory: Path) -> Manifest | None:
    """The manifest if `directory` holds a complete download, else None (never raises for bad content)."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError):
        return None
    if manifest.format != FORMAT:
        return None
    for record in manifest.files:
        try:
            if (directory / safe_relative_path(record.path, "manifest entry")).stat().st_size != record.size:
                return None
        except (OSError, OrchestratorError):
            return None
    return manifest


def build_manifest(directory: Path, *, name: str, source: str, revision: str | None, commit: str | None,
                   selection: tuple[str, ...] | None) -> Manifest:
    """Hash every weight file now in `directory`: the manifest describes what is on disk, not what was asked.

    Every file is fsynced first, whichever source wrote it (huggingface_hub's downloader does not).
    """
    fsync_tree(directory)
    files = tuple(FileRecord(path=path, size=(directory / path).stat().st_size, sha256=sha256_file(directory / path))
                  for path in content_files(directory))
    return Manifest(name=name, source=source, revision=revision, commit=commit, selection=selection, files=files)


def verify_directory(directory: Path) -> list[str]:
    """Re-hash every file the manifest lists; one line per problem (empty when all match)."""
    try:
        manifest = Manifest.model_validate_json((directory / MANIFEST_NAME).read_bytes())
    except (OSError, ValidationError) as exc:
        return [f"no readable manifest in {directory} ({type(exc).__name__})"]
    problems = []
    for record in manifest.files:
        path = directory / record.path
        if not path.is_file():
            problems.append(f"{record.path}: missing")
        elif path.stat().st_size != record.size:
            problems.append(f"{record.path}: size {path.stat().st_size}, manifest says {record.size}")
        elif (actual := sha256_file(path)) != record.sha256:
            problems.append(f"{record.path}: sha256 {actual[:12]}..., manifest says {record.sha256[:12]}...")
    return problems
