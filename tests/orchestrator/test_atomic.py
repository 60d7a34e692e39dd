"""One atomic, durable write for every file the orchestrator publishes (markers, manifests, weights, outputs)."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable
from pathlib import Path

import pytest

from orchestrator.atomic import TMP_SUFFIX, atomic_file, atomic_write_text
from orchestrator.envs.cache import MARKER, EnvCache
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.manifest import MANIFEST_NAME
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import FetchResult, LocalDirSource, WeightsSource
from orchestrator.weights.transfer import TransferReporter
from tests.support.weights import FILES, write_repo


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, int]]:
    """(device, inode) of everything fsynced from now on; the real fsync still runs (a spy, not a stand-in)."""
    seen: list[tuple[int, int]] = []
    real_fsync = os.fsync

    def spy(fd: int) -> None:
        info = os.fstat(fd)
        seen.append((info.st_dev, info.st_ino))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    return seen


def identity(path: Path) -> tuple[int, int]:
    info = path.stat()
    return info.st_dev, info.st_ino


def test_new_content_replaces_the_old_with_the_file_and_its_folder_fsynced(tmp_path: Path,
                                                                          fsynced: list[tuple[int, int]]) -> None:
    target = tmp_path / "run.json"
    target.write_text("old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    assert fsynced == [identity(target), identity(tmp_path)]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]


def test_a_failed_write_keeps_the_old_content_and_leaves_no_temp_file(tmp_path: Path) -> None:
    target = tmp_path / "metadata.jsonl"
    target.write_text("old")
    with pytest.raises(RuntimeError, match="disk on fire"), atomic_file(target) as handle:
        handle.write(b"half of the new")
        raise RuntimeError("disk on fire")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["metadata.jsonl"]


def test_permissions_are_those_open_would_give(tmp_path: Path) -> None:
    """A shared cache must stay readable by others: no 0600 temp-file permissions on published files."""
    (tmp_path / "plain").write_text("x")
    atomic_write_text(tmp_path / "atomic", "x")
    assert stat.S_IMODE((tmp_path / "atomic").stat().st_mode) == stat.S_IMODE((tmp_path / "plain").stat().st_mode)


def test_files_still_being_written_carry_the_suffix_the_caches_ignore(tmp_path: Path) -> None:
    with atomic_file(tmp_path / "model.safetensors") as handle:
        handle.write(b"partial")
        assert [p.name.endswith(TMP_SUFFIX) for p in tmp_path.iterdir()] == [True]


def _weights_download(root: Path) -> None:
    write_repo(root / "mirror", "acme/tiny")
    WeightsCache(root / "cache").download(WeightsRequirement("acme/tiny"), LocalDirSource(root / "mirror"))


class PlainWritingSource(WeightsSource):
    """Writes files the way huggingface_hub's snapshot_download does: plain writes, never an fsync."""

    label = "plain"

    def fetch(self, name: str, files: tuple[str, ...] | None, revision: str | None, dest: Path,
              reporter: TransferReporter) -> FetchResult:
        write_repo(dest.parent, dest.name)
        return FetchResult("plain", revision, None, {})


def _weights_download_written_plainly(root: Path) -> None:
    WeightsCache(root / "cache").download(WeightsRequirement("acme/tiny"), PlainWritingSource())


def _env_build(root: Path) -> None:
    EnvCache(root / "cache").ensure("tiny", "0" * 64, lambda work: work.mkdir() or {}, relocatable=True)


@pytest.mark.parametrize("publish", [_weights_download, _weights_download_written_plainly, _env_build],
                         ids=["weights", "weights written without fsync", "env"])
def test_every_cache_publishes_durably_through_the_one_helper(tmp_path: Path, fsynced: list[tuple[int, int]],
                                                              publish: Callable[[Path], None]) -> None:
    publish(tmp_path)
    (entry,) = (p for p in (tmp_path / "cache").iterdir() if p.is_dir())
    entry = entry / "tiny" if entry.name == "acme" else entry
    published = {p.relative_to(entry).as_posix() for p in entry.rglob("*") if p.is_file()}
    assert published in ({MANIFEST_NAME, *FILES}, {MARKER})
    for path in [*entry.rglob("*"), entry, entry.parent]:
        assert identity(path) in fsynced, f"{path} was not fsynced"
