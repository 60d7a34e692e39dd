"""The contract between a model and the orchestrator.

The parent process instantiates a model only to read its declarations (`conda_env_name`,
`weights_names`, `id_file_mapping`, `num_gpus`); `setup()` and `__call__` run only inside a
worker started with the interpreter of `conda_env_name`, where the guarded imports resolve.
"""

from __future__ import annotations

import abc
from typing import Any


class ModelInterface(abc.ABC):
    """Base class for every model a pipeline stage can run."""

    @property
    @abc.abstractmethod
    def conda_env_name(self) -> str:
        """Name of the environment under `envs/` this model must run in."""

    @property
    def weights_names(self) -> list[str]:
        """Names of the weight sets this model needs (usually hub repo ids); none by default."""
        return []

    @property
    def id_file_mapping(self) -> dict[str, list[str] | None]:
        """For each weights name, the files needed from it; `None` means all files."""
        return {name: None for name in self.weights_names}

    @property
    def num_gpus(self) -> float:
        """GPUs one replica needs; fractions let replicas share a GPU."""
        return 1.0

    @abc.abstractmethod
    def setup(self) -> None:
        """Load weights and build the model; runs once per worker, inside the environment."""

    @abc.abstractmethod
    def __call__(self, batch: Any) -> Any:
        """Run on one batch; must return data the wire protocol can encode (numbers,
        strings, bytes, lists, dicts, numpy arrays, torch tensors)."""
