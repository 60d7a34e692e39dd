"""How to start a worker inside an env: an argv list and an env dict, never a shell string.

The worker runs `<env python> -m workers`. It must see the `workers` and `models` packages and
the user's own model code, but never the parent's site-packages, so its PYTHONPATH holds a
private folder of symlinks to just those two packages, then the user's code folders.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import models
import workers
from orchestrator.envs import Env

_SHARED_PACKAGES = (workers, models)


def make_runtime_dir(prefix: str = "orch-run-") -> Path:
    """A private (0700) folder for one run's ipc endpoints and the workers' import path."""
    return Path(tempfile.mkdtemp(prefix=prefix))


def worker_pythonpath(runtime_dir: Path, user_code_dirs: Sequence[Path] = ()) -> str:
    """PYTHONPATH giving a worker `workers`, `models` and the user's code folders, nothing else."""
    link_dir = runtime_dir / "pythonpath"
    link_dir.mkdir(exist_ok=True)
    for package in _SHARED_PACKAGES:
        link = link_dir / package.__name__
        with contextlib.suppress(FileExistsError):  # another worker of this run made it first
            link.symlink_to(Path(next(iter(package.__path__))).resolve(), target_is_directory=True)
    return os.pathsep.join([str(link_dir), *(str(Path(d).resolve()) for d in user_code_dirs)])


def worker_environ(
    env: Env, runtime_dir: Path, user_code_dirs: Sequence[Path] = (), extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Full environment for a worker process in `env`."""
    environ = env.launch_environ(os.environ if base is None else base)
    environ["PYTHONPATH"] = worker_pythonpath(runtime_dir, user_code_dirs)
    environ["PYTHONUNBUFFERED"] = "1"
    environ.update(extra or {})
    return environ


def worker_argv(env: Env, *args: str) -> list[str]:
    """Exec the env's interpreter directly (no `conda run`, no `uv run`): fast start, signals reach it."""
    return [str(env.python), "-m", "workers", *args]
