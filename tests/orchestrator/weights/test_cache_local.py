"""The cache with a local-directory source: selection, manifests, resume, verify, disk full, concurrency."""

from __future__ import annotations

import json
import resource
import signal
import threading
from pathlib import Path

import pytest

from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.manifest import MANIFEST_NAME, TMP_SUFFIX, read_manifest, sha256_file
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import LocalDirSource, SourceError, open_source
from orchestrator.weights.transfer import DownloadError
from tests.support.cli import run_cli
from tests.support.weights import FILES, RecordingReporter, write_repo

NAME = "acme/tiny"
SELECTED = WeightsRequirement(NAME, ("config.json", "model.safetensors"))


@pytest.fixture
def mirror(tmp_path: Path) -> Path:
    write_repo(tmp_path / "mirror", NAME)
    return tmp_path / "mirror"


def test_id_file_mapping_selects_files_and_the_manifest_describes_them(cache: WeightsCache, mirror: Path) -> None:
    outcome = cache.download(SELECTED, LocalDirSource(mirror))
    directory = cache.directory(NAME)
    assert directory == cache.root / "acme" / "tiny"
    assert sorted(p.name for p in directory.iterdir()) == [MANIFEST_NAME, "config.json", "model.safetensors"]
    manifest = read_manifest(directory)
    assert manifest is not None and outcome.fetched and manifest.selection == SELECTED.files
    assert {(r.path, r.size, r.sha256) for r in manifest.files} == {
        (p, len(FILES[p]), sha256_file(mirror / NAME / p)) for p in SELECTED.files}
    assert manifest.source == str(mirror / NAME)
    assert cache.status(SELECTED) is WeightsStatus.PRESENT
    assert cache.status(WeightsRequirement(NAME)) is WeightsStatus.OUTDATED  # all files were not asked for
    assert not cache.download(SELECTED, LocalDirSource(mirror)).fetched


def test_a_directory_without_a_complete_manifest_is_not_present(cache: WeightsCache, mirror: Path) -> None:
    cache.download(WeightsRequirement(NAME), LocalDirSource(mirror))
    directory = cache.directory(NAME)
    manifest_path = directory / MANIFEST_NAME
    good = manifest_path.read_text()
    manifest_path.write_text(good[: len(good) // 2])  # torn write
    assert read_manifest(directory) is None and cache.status(WeightsRequirement(NAME)) is WeightsStatus.ABSENT
    manifest_path.write_text(good)
    (directory / "model.safetensors").write_bytes(b"short")  # a file shorter than recorded
    assert cache.status(WeightsRequirement(NAME)) is WeightsStatus.ABSENT
    manifest_path.unlink()
    assert cache.cached_names() == []


def test_interrupted_download_is_not_present_and_resumes_without_refetching(cache: WeightsCache,
                                                                            mirror: Path) -> None:
    requirement = WeightsRequirement(NAME)
    first = RecordingReporter(interrupt_after=2)
    with pytest.raises(KeyboardInterrupt):
        cache.download(requirement, LocalDirSource(mirror), first)
    assert cache.status(requirement) is WeightsStatus.PARTIAL
    assert not cache.directory(NAME).exists()
    partial = cache.partial_directory(NAME)
    assert not list(partial.rglob(f"*{TMP_SUFFIX}")) and not (partial / MANIFEST_NAME).exists()
    second = RecordingReporter()
    assert cache.download(requirement, LocalDirSource(mirror), second).fetched
    assert second.kept_files == first.finished_files
    assert sorted(second.started_files + second.kept_files) == sorted(FILES)
    assert not partial.exists() and cache.status(requirement) is WeightsStatus.PRESENT


def test_needing_more_files_keeps_the_ones_already_cached(cache: WeightsCache, mirror: Path) -> None:
    cache.download(WeightsRequirement(NAME, ("config.json",)), LocalDirSource(mirror))
    reporter = RecordingReporter()
    cache.download(SELECTED, LocalDirSource(mirror), reporter)
    assert reporter.kept_files == ["config.json"] and reporter.started_files == ["model.safetensors"]
    assert read_manifest(cache.directory(NAME)).selection == SELECTED.files  # type: ignore[union-attr]


def test_a_file_the_source_lacks_is_named_and_the_cached_copy_survives(cache: WeightsCache, mirror: Path) -> None:
    cache.download(SELECTED, LocalDirSource(mirror))
    wanting = WeightsRequirement(NAME, ("config.json", "pytorch_model.bin"))
    with pytest.raises(SourceError, match=r"lacks pytorch_model\.bin, which id_file_mapping of 'acme/tiny' asks "
                                          r"for; it holds: README\.md, config\.json"):
        cache.download(wanting, LocalDirSource(mirror))
    assert cache.status(SELECTED) is WeightsStatus.PRESENT


def test_revision_pinning_against_a_mirror_manifest(cache: WeightsCache, mirror: Path, tmp_path: Path) -> None:
    cache.download(WeightsRequirement(NAME), LocalDirSource(mirror))
    manifest_path = cache.directory(NAME) / MANIFEST_NAME
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**data, "revision": "v1"}))  # the cache now mirrors revision v1
    other = WeightsCache(tmp_path / "other")
    with pytest.raises(SourceError, match=r"holds revision v1 of 'acme/tiny', but the config pins 'v2'"):
        other.download(WeightsRequirement(NAME, revision="v2"), LocalDirSource(cache.root))
    assert other.download(WeightsRequirement(NAME, revision="v1"), LocalDirSource(cache.root)).manifest.revision == "v1"
    assert other.status(WeightsRequirement(NAME, revision="v2")) is WeightsStatus.OUTDATED


def test_a_corrupted_mirror_file_is_refused(cache: WeightsCache, mirror: Path, tmp_path: Path) -> None:
    cache.download(WeightsRequirement(NAME), LocalDirSource(mirror))
    target = cache.directory(NAME) / "model.safetensors"
    data = bytearray(target.read_bytes())
    data[1000] ^= 0xFF
    target.write_bytes(bytes(data))
    other = WeightsCache(tmp_path / "other")
    with pytest.raises(DownloadError, match=r"model\.safetensors from .* has sha256 .* but the source's manifest"):
        other.download(WeightsRequirement(NAME), LocalDirSource(cache.root))
    assert other.status(WeightsRequirement(NAME)) is not WeightsStatus.PRESENT
    assert not (other.partial_directory(NAME) / "model.safetensors").exists()


def test_verify_names_a_flipped_byte_and_force_repairs_it(cache: WeightsCache, mirror: Path) -> None:
    cache.download(WeightsRequirement(NAME), LocalDirSource(mirror))
    target = cache.directory(NAME) / "sub" / "tokenizer.json"
    data = bytearray(target.read_bytes())
    data[3] ^= 0x01
    target.write_bytes(bytes(data))
    assert cache.verify([NAME]) == {NAME: [(f"sub/tokenizer.json: sha256 {sha256_file(target)[:12]}..., manifest "
                                           f"says {sha256_file(mirror / NAME / 'sub/tokenizer.json')[:12]}...")]}
    result = run_cli("models", "verify", "--weights-dir", str(cache.root))
    assert result.returncode == 2
    assert "1 of 1 weights damaged" in result.stderr and "sub/tokenizer.json: sha256" in result.stderr
    assert f"orchestrator models download --models {NAME} --weights-dir {cache.root} --force" in result.stderr
    result = run_cli("models", "download", "--models", NAME, "--from", str(mirror), "--force",
                     "--weights-dir", str(cache.root), cwd=mirror)
    assert result.returncode == 0, result.stderr
    assert cache.verify([NAME]) == {NAME: []}


def test_concurrent_downloads_of_one_name_fetch_once(cache: WeightsCache, mirror: Path) -> None:
    outcomes = []

    def fetch() -> None:
        outcomes.append(cache.download(WeightsRequirement(NAME), LocalDirSource(mirror)).fetched)

    threads = [threading.Thread(target=fetch) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == [False, False, True]


def _small_file_limit() -> None:
    """In the child: writes past 64 KiB fail with EFBIG, as on a full disk (not SIGXFSZ)."""
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_disk_full_leaves_nothing_that_looks_complete_and_the_rerun_resumes(tmp_path: Path, mirror: Path) -> None:
    root = tmp_path / "weights"
    args = ("models", "download", "--models", NAME, "--from", str(mirror), "--weights-dir", str(root))
    result = run_cli(*args, cwd=tmp_path, preexec_fn=_small_file_limit)
    assert result.returncode == 2, result.stderr
    assert "no space left while writing" in result.stderr and "--weights-dir" in result.stderr
    cache = WeightsCache(root)
    assert cache.status(WeightsRequirement(NAME)) is WeightsStatus.PARTIAL and not cache.directory(NAME).exists()
    assert not list(root.rglob(f"*{TMP_SUFFIX}"))
    result = run_cli(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "kept README.md" in result.stderr and "kept config.json" in result.stderr
    assert cache.verify([NAME]) == {NAME: []}


def test_sources_are_chosen_by_their_spelling(tmp_path: Path) -> None:
    assert isinstance(open_source(str(tmp_path)), LocalDirSource)
    with pytest.raises(SourceError, match="does not exist"):
        open_source(str(tmp_path / "nowhere"))
    with pytest.raises(SourceError, match=r"unsupported weights source 'gs://b/p'"):
        open_source("gs://b/p")
    with pytest.raises(SourceError, match=r"has no weights 'acme/none'"):
        LocalDirSource(tmp_path).listing("acme/none")
