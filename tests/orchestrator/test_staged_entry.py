"""The one build-in-`.partial`, publish-by-rename mechanism both caches use (their own tests cover each cache)."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.atomic import TMP_SUFFIX
from orchestrator.build_cache import StagedEntry, final_path
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.manifest import MANIFEST_NAME
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import LocalDirSource
from tests.support.weights import FILES, RecordingReporter, write_repo


def fill_with(files: dict[str, str]):
    def fill(work: Path) -> str:
        work.mkdir(parents=True, exist_ok=True)
        for name, text in files.items():
            (work / name).write_text(text)
        return "complete"

    return fill


def test_publish_renames_the_partial_into_place_and_writes_the_marker_last(tmp_path: Path) -> None:
    staged = StagedEntry(tmp_path / "entry", "MARKER")
    with staged.locked():
        assert staged.build(fill_with({"a": "1"}), lambda result: result) == "complete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry", "entry.lock"]
    assert (staged.final / "MARKER").read_text() == "complete" and (staged.final / "a").read_text() == "1"
    assert final_path(staged.partial) == staged.final == final_path(staged.final)


def test_an_unmarked_final_left_by_a_crash_is_replaced(tmp_path: Path) -> None:
    staged = StagedEntry(tmp_path / "entry", "MARKER")
    staged.final.mkdir()
    (staged.final / "stale").write_text("from a build that died before its marker")
    with staged.locked():
        staged.build(fill_with({"a": "1"}), lambda result: result)
    assert sorted(p.name for p in staged.final.iterdir()) == ["MARKER", "a"]


@pytest.mark.parametrize("in_place", [False, True], ids=["beside", "in place"])
def test_a_failed_build_leaves_nothing_unless_told_to_keep_it(tmp_path: Path, in_place: bool) -> None:
    staged = StagedEntry(tmp_path / "entry", "MARKER", in_place=in_place)

    def failing(work: Path) -> str:
        fill_with({"half": "done"})(work)
        raise RuntimeError("installer failed")

    with staged.locked(), pytest.raises(RuntimeError, match="installer failed"):
        staged.build(failing, lambda result: result)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["entry.lock"]
    with staged.locked(), pytest.raises(RuntimeError, match="installer failed"):
        staged.build(failing, lambda result: result, keep_failed=lambda work: True)
    assert (staged.final if in_place else staged.partial).joinpath("half").is_file()
    assert not (staged.final / "MARKER").exists()


def test_in_place_builds_publish_by_their_marker_alone(tmp_path: Path) -> None:
    staged = StagedEntry(tmp_path / "prefix", "MARKER", in_place=True)
    seen = []
    with staged.locked():
        staged.build(lambda work: seen.append(work) or fill_with({"bin": "x"})(work), lambda result: result)
    assert seen == [staged.final] and not staged.partial.exists()
    assert sorted(p.name for p in staged.final.iterdir()) == ["MARKER", "bin"]


def test_a_resumed_download_drops_files_a_killed_one_was_still_writing(tmp_path: Path) -> None:
    """A SIGKILLed download leaves its whole files and, beside them, a temp file it was still writing."""
    write_repo(tmp_path / "mirror", "acme/tiny")
    cache = WeightsCache(tmp_path / "cache")
    partial = cache.partial_directory("acme/tiny")
    partial.mkdir(parents=True)
    (partial / "config.json").write_bytes(FILES["config.json"])
    (partial / f".model.safetensors.0badf00d{TMP_SUFFIX}").write_bytes(b"the first half of a big fi")
    reporter = RecordingReporter()
    cache.download(WeightsRequirement("acme/tiny"), LocalDirSource(tmp_path / "mirror"), reporter)
    assert reporter.kept_files == ["config.json"]
    final = cache.directory("acme/tiny")
    assert sorted(p.relative_to(final).as_posix() for p in final.rglob("*") if p.is_file()) == sorted(
        [MANIFEST_NAME, *FILES])
