"""The local weights cache: what is present, downloading into it, and mirroring it to S3.

    <root>/<org>/<repo>/            present: its manifest was written last
    <root>/<org>/<repo>.partial/    a download in progress, or the whole files an interrupted one left
    <root>/<org>/<repo>.lock        serialises downloads of that name across processes

A download fills `.partial` (seeded with hard links to whatever copy is already there, so nothing
whole is fetched twice), hashes it, checks the hashes the source promised, renames it into place and
only then writes the manifest. A failed download leaves the previous copy untouched.
"""

from __future__ import annotations

import enum
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from models.model_utils import validate_weights_name, weights_root
from orchestrator.build_cache import PARTIAL_SUFFIX, StagedEntry
from orchestrator.weights.manifest import (
    MANIFEST_NAME,
    Manifest,
    build_manifest,
    content_files,
    read_manifest,
    verify_directory,
)
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import FetchResult, WeightsSource
from orchestrator.weights.transfer import DownloadError, NullReporter, TransferReporter

if TYPE_CHECKING:
    from orchestrator.weights.s3 import S3Source


class WeightsStatus(str, enum.Enum):
    PRESENT = "yes"
    ABSENT = "no"
    PARTIAL = "partial"
    """An interrupted download; the next one resumes it."""
    OUTDATED = "outdated"
    """A complete copy exists but lacks files now needed, or holds another pinned revision."""


@dataclass(frozen=True)
class DownloadOutcome:
    name: str
    fetched: bool
    manifest: Manifest


class WeightsCache:
    """One weights root (default: `models.model_utils.weights_root()`, i.e. ORCHESTRATOR_WEIGHTS_DIR)."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else weights_root()

    def directory(self, name: str) -> Path:
        return self.root / validate_weights_name(name)

    def partial_directory(self, name: str) -> Path:
        return StagedEntry(self.directory(name), MANIFEST_NAME).partial

    def manifest(self, name: str) -> Manifest | None:
        return read_manifest(self.directory(name))

    def status(self, requirement: WeightsRequirement) -> WeightsStatus:
        manifest = self.manifest(requirement.name)
        if manifest is not None and requirement.satisfied_by(manifest):
            return WeightsStatus.PRESENT
        if self.partial_directory(requirement.name).is_dir():
            return WeightsStatus.PARTIAL
        return WeightsStatus.ABSENT if manifest is None else WeightsStatus.OUTDATED

    def cached_names(self) -> list[str]:
        """Every name with a complete copy under the root."""
        if not self.root.is_dir():
            return []
        names = []
        for marker in self.root.rglob(MANIFEST_NAME):
            relative = marker.parent.relative_to(self.root)
            if not any(part.endswith(PARTIAL_SUFFIX) for part in relative.parts) and read_manifest(marker.parent):
                names.append(relative.as_posix())
        return sorted(names)

    def download(self, requirement: WeightsRequirement, source: WeightsSource,
                 reporter: TransferReporter | None = None, *, force: bool = False) -> DownloadOutcome:
        """Make `requirement` present, fetching from `source` unless it already is (or `force`)."""
        return self._fetch(requirement, source, reporter or NullReporter(),
                           skip=lambda manifest: not force and requirement.satisfied_by(manifest), fresh=force)

    def pull(self, name: str, origin: S3Source, reporter: TransferReporter | None = None) -> DownloadOutcome:
        """Make the local copy of `name` hold exactly the files the mirror's manifest lists."""
        remote = origin.remote_manifest(name)
        requirement = WeightsRequirement(name, None, remote.revision if remote else None)
        return self._fetch(requirement, origin, reporter or NullReporter(),
                           skip=lambda manifest: remote is not None and manifest.files == remote.files, fresh=False)

    def push(self, name: str, target: S3Source, reporter: TransferReporter | None = None) -> bool:
        """Mirror the complete copy of `name` to `target`; False when the mirror already had it."""
        manifest = self.manifest(name)
        if manifest is None:
            raise DownloadError(f"weights {name!r} are not complete in {self.root}: download them before pushing")
        return target.push(name, self.directory(name), manifest, reporter or NullReporter())

    def verify(self, names: list[str]) -> dict[str, list[str]]:
        """Problems per name after re-hashing every file (an empty list: intact)."""
        return {name: verify_directory(self.directory(name)) for name in names}

    def _fetch(self, requirement: WeightsRequirement, source: WeightsSource, reporter: TransferReporter, *,
               skip: Callable[[Manifest], bool], fresh: bool) -> DownloadOutcome:
        name = requirement.name
        staged = StagedEntry(self.directory(name), MANIFEST_NAME)
        with staged.locked():
            previous = read_manifest(staged.final)
            if previous is not None and skip(previous):
                return DownloadOutcome(name, False, previous)
            fresh = fresh or bool(previous and requirement.revision and previous.revision != requirement.revision)

            def fill(partial: Path) -> Manifest:
                partial.mkdir(parents=True, exist_ok=True)
                if not fresh:
                    _seed_from(staged.final, partial)
                result = source.fetch(name, requirement.files, requirement.revision, partial, reporter)
                manifest = build_manifest(partial, name=name, source=result.source, revision=result.revision,
                                          commit=result.commit, selection=_selection(requirement, previous, fresh))
                _check_promised(manifest, result, partial)
                return manifest

            # A failed download keeps its whole files for the next one, unless it got none.
            manifest = staged.build(fill, lambda m: m.model_dump_json(indent=2), resume=not fresh,
                                    keep_failed=lambda partial: bool(content_files(partial)))
        return DownloadOutcome(name, True, manifest)


def _seed_from(final: Path, partial: Path) -> None:
    """Hard-link the files of an existing copy into `partial`, so the fetch keeps what is whole."""
    if not final.is_dir():
        return
    for path in content_files(final):
        target = partial / path
        if target.exists():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(final / path, target)
        except OSError:
            shutil.copy2(final / path, target)


def _selection(requirement: WeightsRequirement, previous: Manifest | None, fresh: bool) -> tuple[str, ...] | None:
    if requirement.files is None:
        return None
    if previous is None or fresh or previous.selection is None:
        return requirement.files
    return tuple(dict.fromkeys(previous.selection + requirement.files))


def _check_promised(manifest: Manifest, result: FetchResult, partial: Path) -> None:
    """A file whose sha256 differs from the source's own manifest is deleted and reported, never kept."""
    for record in manifest.files:
        expected = result.expected_sha256.get(record.path)
        if expected is not None and expected != record.sha256:
            (partial / record.path).unlink(missing_ok=True)
            raise DownloadError(f"{record.path} from {result.source} has sha256 {record.sha256[:12]}... but the "
                                f"source's manifest says {expected[:12]}...: the source is corrupted or changed "
                                f"during the download; run `orchestrator models verify` where it was pushed from")
