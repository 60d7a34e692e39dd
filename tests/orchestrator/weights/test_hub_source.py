"""The Hugging Face source, as far as it can be tested without the hub (unreachable from this machine)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from huggingface_hub import constants
from huggingface_hub.utils import filter_repo_objects

from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.hub import HubSource, allow_patterns, snapshot_arguments
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import SourceError
from tests.support.cli import run_cli

REPO_FILES = ["config.json", "model.safetensors", "pytorch_model.bin", "a[1].bin", "a1.bin", "onnx/config.json"]


def _hub_reachable() -> bool:
    try:
        socket.create_connection(("huggingface.co", 443), timeout=3).close()
    except OSError:
        return False
    return True


def test_id_file_mapping_becomes_patterns_that_match_exactly_those_files() -> None:
    assert allow_patterns(None) is None
    patterns = allow_patterns(("config.json", "a[1].bin"))
    assert list(filter_repo_objects(REPO_FILES, allow_patterns=patterns)) == ["config.json", "a[1].bin"]
    assert list(filter_repo_objects(REPO_FILES, allow_patterns=allow_patterns(None))) == REPO_FILES


def test_snapshot_is_pinned_to_the_resolved_commit(tmp_path: Path) -> None:
    assert snapshot_arguments("org/repo", ("config.json",), "0" * 40, tmp_path) == {
        "repo_id": "org/repo", "revision": "0" * 40, "allow_patterns": ["config.json"], "local_dir": str(tmp_path)}


def test_offline_mode_is_refused_with_the_way_out(cache: WeightsCache, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SourceError, match=r"cannot download 'org/repo' from the Hugging Face hub: HF_HUB_OFFLINE is "
                                          r"set; to work offline, .*--from /that/dir or --from s3://bucket/prefix"):
        cache.download(WeightsRequirement("org/repo"), HubSource())
    assert cache.status(WeightsRequirement("org/repo")) is WeightsStatus.ABSENT


def test_an_unreachable_hub_names_the_endpoint(cache: WeightsCache, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{probe.getsockname()[1]}"
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    with pytest.raises(SourceError, match=rf"cannot reach the Hugging Face hub at {endpoint} for 'org/repo'"):
        cache.download(WeightsRequirement("org/repo", revision="v1.0"), HubSource())
    assert not cache.partial_directory("org/repo").exists()


def test_cli_download_with_hub_offline(tmp_path: Path) -> None:
    result = run_cli("models", "download", "--models", "org/repo", "--weights-dir", str(tmp_path),
                     env={"HF_HUB_OFFLINE": "1"}, cwd=tmp_path)
    assert result.returncode == 2
    assert "org/repo is not in model_download.yaml; fetching all of its files" in result.stderr
    assert "HF_HUB_OFFLINE is set" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.skipif(not _hub_reachable(), reason="the Hugging Face hub is not reachable from this machine")
def test_real_hub_download_selects_files_and_records_the_commit(cache: WeightsCache) -> None:
    requirement = WeightsRequirement("hf-internal-testing/tiny-random-bert", ("config.json",), "main")
    outcome = cache.download(requirement, HubSource())
    assert outcome.manifest.paths() == {"config.json"} and outcome.manifest.revision == "main"
    assert outcome.manifest.commit and len(outcome.manifest.commit) == 40
    assert not (cache.directory(requirement.name) / ".cache").exists()
    assert cache.status(requirement) is WeightsStatus.PRESENT
