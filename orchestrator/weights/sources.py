"""Where weights come from: one small interface, `fetch(name, files, dest)`, three implementations.

    --from (none) / hf      ──▶ HubSource        huggingface_hub.snapshot_download, allow_patterns, revision
    --from s3://bucket/pfx  ──▶ S3Source         <pfx>/<org>/<repo>/<files>, manifest included
    --from /a/dir           ──▶ LocalDirSource   <dir>/<org>/<repo>/<files> (an NFS mirror, another cache)

A listing source (local, S3) first lists what it holds (sizes, and sha256 when the mirror has a
manifest), then copies only the files `dest` does not already hold whole: that is the resume.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from orchestrator.errors import OrchestratorError
from orchestrator.weights.manifest import (
    CHUNK_BYTES,
    content_files,
    read_manifest,
    safe_relative_path,
    sha256_file,
)
from orchestrator.weights.transfer import TransferReporter, receive_file

OFFLINE_HINT = ("to work offline, copy the weights to a local or NFS directory or an S3 mirror and pass "
                "--from /that/dir or --from s3://bucket/prefix; HF_HUB_OFFLINE=1 keeps huggingface_hub off the network")


class SourceError(OrchestratorError):
    """A weights source is unreachable, refuses access, or lacks something asked of it."""


@dataclass(frozen=True)
class RemoteFile:
    size: int
    sha256: str | None = None


@dataclass(frozen=True)
class Listing:
    """What a source holds for one weights name; `revision` comes from the mirror's manifest, if any."""

    location: str
    files: dict[str, RemoteFile]
    revision: str | None = None
    commit: str | None = None


@dataclass(frozen=True)
class FetchResult:
    """Where the files came from and what the source promised about them (checked before the manifest)."""

    source: str
    revision: str | None
    commit: str | None
    expected_sha256: dict[str, str]


class WeightsSource(abc.ABC):
    label: str

    @abc.abstractmethod
    def fetch(self, name: str, files: tuple[str, ...] | None, revision: str | None, dest: Path,
              reporter: TransferReporter) -> FetchResult:
        """Put the files of `name` (all when `files` is None) into `dest`, keeping whole ones already there."""


class ListingSource(WeightsSource):
    """A source that can list a weights name and stream each file: a local directory or S3."""

    @abc.abstractmethod
    def listing(self, name: str) -> Listing: ...

    @abc.abstractmethod
    def read_chunks(self, name: str, path: str) -> Iterator[bytes]: ...

    def fetch(self, name: str, files: tuple[str, ...] | None, revision: str | None, dest: Path,
              reporter: TransferReporter) -> FetchResult:
        listing = self.listing(name)
        if revision and listing.revision != revision:
            raise SourceError(f"{listing.location} holds revision {listing.revision or 'unknown (no manifest)'} of "
                              f"{name!r}, but the config pins {revision!r}; mirror that revision first")
        wanted = select_files(listing, name, files)
        for path in wanted:
            remote = listing.files[path]
            target = dest / path
            if _already_whole(target, remote):
                reporter.kept(path)
                continue
            reporter.started(path, remote.size)
            receive_file(self.read_chunks(name, path), target, path, reporter)
        expected = {path: sha for path in wanted if (sha := listing.files[path].sha256)}
        return FetchResult(listing.location, listing.revision, listing.commit, expected)


def select_files(listing: Listing, name: str, files: tuple[str, ...] | None) -> list[str]:
    """The listed files to copy; every file `id_file_mapping` asks for must be there."""
    if files is None:
        return sorted(listing.files)
    missing = [f for f in files if f not in listing.files]
    if missing:
        held = ", ".join(sorted(listing.files)) or "nothing"
        raise SourceError(f"{listing.location} lacks {', '.join(missing)}, which id_file_mapping of {name!r} asks "
                          f"for; it holds: {held}")
    return list(files)


def _already_whole(target: Path, remote: RemoteFile) -> bool:
    """A file from an earlier attempt is kept when its size (and sha256, when known) match the source."""
    if not target.is_file() or target.stat().st_size != remote.size:
        return False
    return remote.sha256 is None or sha256_file(target) == remote.sha256


class LocalDirSource(ListingSource):
    """A directory laid out like the cache: `<dir>/<org>/<repo>/...` (an NFS share, another machine's cache)."""

    def __init__(self, root: Path) -> None:
        if not root.is_dir():
            raise SourceError(f"weights source directory {root} does not exist (or is not a directory)")
        self.root = root
        self.label = str(root)

    def listing(self, name: str) -> Listing:
        directory = self.root / name
        if not directory.is_dir():
            raise SourceError(f"{self.root} has no weights {name!r} (expected a folder {directory})")
        manifest = read_manifest(directory)
        if manifest is not None:
            files = {r.path: RemoteFile(r.size, r.sha256) for r in manifest.files}
            return Listing(str(directory), files, manifest.revision, manifest.commit)
        sizes = {path: RemoteFile((directory / path).stat().st_size) for path in content_files(directory)}
        return Listing(str(directory), sizes)

    def read_chunks(self, name: str, path: str) -> Iterator[bytes]:
        with (self.root / name / safe_relative_path(path, "file")).open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


def open_source(spec: str | None) -> WeightsSource:
    """`None`/`hf` → the hub, `s3://bucket/prefix` → S3, anything else → a local directory."""
    if spec is None or spec in ("hf", "huggingface"):
        from orchestrator.weights.hub import HubSource

        return HubSource()
    if spec.startswith("s3://"):
        from orchestrator.weights.s3 import S3Source

        return S3Source(spec)
    if "://" in spec:
        raise SourceError(f"unsupported weights source {spec!r}: use hf, s3://bucket/prefix or a directory")
    return LocalDirSource(Path(spec).expanduser())
