"""Before any worker starts, missing weights fail the run with the exact command that fetches them."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from models.model_interface import ModelInterface
from models.nudenet import NudeNetContentFilter
from models.transnetv2 import TransNetV2ShotDetector
from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import ConfigError, WeightsMissing
from orchestrator.weights.cache import WeightsCache
from orchestrator.weights.preflight import check_weights_present, missing_weights
from orchestrator.weights.requirements import WeightsRequirement
from orchestrator.weights.sources import LocalDirSource
from tests.support.cli import run_cli
from tests.support.paths import ROOT
from tests.support.weights import NeedsWeights, write_repo


def declared(*models: ModelInterface) -> list[ModelDeclarations]:
    """What a describe step returns for these models."""
    return [ModelDeclarations.of(model) for model in models]


def test_models_whose_weights_ship_in_their_env_need_nothing(cache: WeightsCache) -> None:
    models = declared(TransNetV2ShotDetector(), NudeNetContentFilter())
    assert missing_weights(models) == []
    check_weights_present(models)


def test_missing_weights_are_listed_with_the_download_command(cache: WeightsCache, tmp_path: Path) -> None:
    models = declared(TransNetV2ShotDetector(), NeedsWeights(["acme/tiny", "acme/big"], {"acme/tiny": ["config.json"]}),
                      NeedsWeights(["acme/tiny"]))
    assert missing_weights(models) == ["acme/tiny", "acme/big"]
    with pytest.raises(WeightsMissing) as error:
        check_weights_present(models)
    message = str(error.value)
    assert f"weights missing from {cache.root}: acme/tiny (absent, needed by NeedsWeights)" in message
    command = message.split("Download them with: ")[1]
    assert shlex.split(command) == ["orchestrator", "models", "download", "--models", "acme/tiny,acme/big",
                                    "--weights-dir", str(cache.root)]
    write_repo(tmp_path / "mirror", "acme/tiny")
    cache.download(WeightsRequirement("acme/tiny", ("config.json",)), LocalDirSource(tmp_path / "mirror"))
    assert missing_weights(models) == ["acme/tiny", "acme/big"]  # the second model needs all of acme/tiny
    with pytest.raises(WeightsMissing, match=r"acme/tiny \(outdated, needed by NeedsWeights\)"):
        check_weights_present(models)
    cache.download(WeightsRequirement("acme/tiny"), LocalDirSource(tmp_path / "mirror"))
    assert missing_weights(models) == ["acme/big"]


def test_a_weights_name_escaping_the_cache_is_refused(cache: WeightsCache) -> None:
    with pytest.raises(ConfigError, match=r"model NeedsWeights: weights name 'a/../../etc' must be a relative name"):
        missing_weights(declared(NeedsWeights(["a/../../etc"])))


def test_orchestrator_run_stops_before_starting_workers(tmp_path: Path) -> None:
    result = run_cli("run", str(ROOT / "examples" / "custom_model" / "pipeline.yaml"), "--output", str(tmp_path / "o"),
                     env={"ORCHESTRATOR_WEIGHTS_DIR": str(tmp_path / "empty")})
    assert result.returncode == 2, result.stderr
    assert "tutorial/tiny-vit (absent, needed by TinyFrameEmbedder)" in result.stderr
    assert f"orchestrator models download --models tutorial/tiny-vit --weights-dir {tmp_path / 'empty'}" in \
        result.stderr.replace("\n", "")
