"""What a model needs from the weights cache: names, the files of each, and an optional pinned revision."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from models.model_utils import InvalidWeightsName, validate_weights_name
from orchestrator.declarations import ModelDeclarations
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.weights.manifest import Manifest, safe_relative_path


@dataclass(frozen=True)
class WeightsRequirement:
    """One weights name, the files needed from it (None: all) and the revision pinned (None: default)."""

    name: str
    files: tuple[str, ...] | None = None
    revision: str | None = None

    def merged(self, other: WeightsRequirement) -> WeightsRequirement:
        """The requirement satisfying both: the union of files (None wins), one revision."""
        if self.revision and other.revision and self.revision != other.revision:
            raise ConfigError(f"weights {self.name!r} are pinned to two revisions: {self.revision!r} and "
                              f"{other.revision!r}; pin one")
        files = None if self.files is None or other.files is None else tuple(dict.fromkeys(self.files + other.files))
        return WeightsRequirement(self.name, files, self.revision or other.revision)

    def satisfied_by(self, manifest: Manifest) -> bool:
        """True when a complete download holds every file needed, at the pinned revision."""
        if self.revision and manifest.revision != self.revision:
            return False
        if self.files is None:
            return manifest.selection is None
        return set(self.files) <= manifest.paths()


def requirements_of(model: ModelDeclarations,
                    revisions: Mapping[str, str] | None = None) -> list[WeightsRequirement]:
    """The model's declared weights, checked: names and file names may not escape the cache."""
    label = model.label
    names = list(model.weights_names)
    mapping = dict(model.id_file_mapping)
    strays = sorted(set(mapping) - set(names)) + sorted(set(revisions or {}) - set(names))
    if strays:
        raise ConfigError(f"model {label}: id_file_mapping/revisions name {strays}, which are not in its "
                          f"weights_names {names}")
    found = []
    for name in names:
        try:
            validate_weights_name(name)
            files = mapping.get(name)
            if files is not None:
                files = tuple(safe_relative_path(f, f"id_file_mapping entry of {name!r}") for f in files)
        except (InvalidWeightsName, OrchestratorError) as exc:
            raise ConfigError(f"model {label}: {exc}") from None
        found.append(WeightsRequirement(name, files, (revisions or {}).get(name)))
    return found


def merge_requirements(requirements: Iterable[WeightsRequirement]) -> list[WeightsRequirement]:
    """One requirement per name, in first-seen order, satisfying every model that shares the name."""
    merged: dict[str, WeightsRequirement] = {}
    for requirement in requirements:
        seen = merged.get(requirement.name)
        merged[requirement.name] = seen.merged(requirement) if seen else requirement
    return list(merged.values())
