"""Where model weights live on this machine, and the model base class under a second name.

Weights for a name such as `org/repo` live in `<root>/org/repo`. The root comes from
`WEIGHTS_DIR_VAR`, else the per-user cache. This is the only place that variable is read,
so the parent and every worker agree on it without importing the orchestrator.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath

# Model files often write `class MyModel(model_utils.ModelInterface)`, reaching the base class through
# this module: it is the very same class as `models.model_interface.ModelInterface`.
from models.model_interface import ModelInterface as ModelInterface

WEIGHTS_DIR_VAR = "ORCHESTRATOR_WEIGHTS_DIR"


class InvalidWeightsName(ValueError):
    """A weights name that would escape the cache root or is empty."""


def weights_root() -> Path:
    """Root of the local weights cache."""
    configured = os.environ.get(WEIGHTS_DIR_VAR)
    if configured:
        return Path(configured).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "orchestrator" / "weights"


def validate_weights_name(name: str) -> PurePosixPath:
    """Return `name` as a relative path, refusing absolute paths, `..` and empty parts."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or any(part in ("", ".", "..") for part in name.split("/")):
        raise InvalidWeightsName(
            f"weights name {name!r} must be a relative name like 'org/repo' without '..' or a leading '/'"
        )
    return path


def get_local_dir_for_weights_name(name: str) -> Path:
    """Directory holding the weights called `name` (it may not exist yet)."""
    return weights_root() / validate_weights_name(name)
