"""Before any worker starts: are the weights of every stage's model in the cache?

Failing here, with the exact command that fixes it, beats a worker failing minutes later inside
`from_pretrained` with a path error. Models whose weights ship inside their env's packages declare
no `weights_names` and are never reported.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Sequence

from models.model_utils import WEIGHTS_DIR_VAR
from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import WeightsMissing
from orchestrator.weights.cache import WeightsCache, WeightsStatus
from orchestrator.weights.requirements import merge_requirements, requirements_of


def _missing(models: Sequence[ModelDeclarations], cache: WeightsCache) -> dict[str, tuple[WeightsStatus, list[str]]]:
    """Weights name → (status, labels of the models needing it), for every name not present."""
    needed_by: dict[str, list[str]] = {}
    requirements = []
    for declared in models:
        for requirement in requirements_of(declared):
            requirements.append(requirement)
            needed_by.setdefault(requirement.name, []).append(declared.label)
    found = {}
    for requirement in merge_requirements(requirements):
        status = cache.status(requirement)
        if status is not WeightsStatus.PRESENT:
            found[requirement.name] = (status, sorted(set(needed_by[requirement.name])))
    return found


def missing_weights(models: Sequence[ModelDeclarations], cache: WeightsCache | None = None) -> list[str]:
    """Names of the weights these models need that are not complete in the cache, in first-needed order."""
    return list(_missing(models, cache or WeightsCache()))


def download_command(names: Sequence[str]) -> str:
    """The command that fetches `names`, naming the cache when it is not the default one."""
    argv = ["orchestrator", "models", "download", "--models", ",".join(names)]
    if os.environ.get(WEIGHTS_DIR_VAR):
        argv += ["--weights-dir", os.environ[WEIGHTS_DIR_VAR]]
    return shlex.join(argv)


def check_weights_present(models: Sequence[ModelDeclarations], cache: WeightsCache | None = None) -> None:
    """Raise WeightsMissing, listing every missing name and the command that downloads them all."""
    cache = cache or WeightsCache()
    missing = _missing(models, cache)
    if not missing:
        return
    listed = "; ".join(f"{name} ({status.name.lower()}, needed by {', '.join(labels)})"
                       for name, (status, labels) in missing.items())
    raise WeightsMissing(f"weights missing from {cache.root}: {listed}. Download them with: "
                         f"{download_command(list(missing))}")
