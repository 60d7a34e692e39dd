"""How to start a worker inside an env: an argv list and an env dict, never a shell string.

    <env python> -s -m workers.bootstrap workers --data ... --control ...
        sys.path: [link folder: workers, models] [stdlib] [the env's site-packages] [user code folders]

A worker must see the `workers` and `models` packages and the user's model code, but never the
parent's site-packages nor the user's own (`-s`, PYTHONNOUSERSITE), and nothing the user keeps in a
config folder or the current directory may shadow an installed package (a stray `numpy.py` there would
break every worker). So PYTHONPATH holds only a private folder of symlinks to the two packages, the
current directory never enters the path (PYTHONSAFEPATH), and `workers.bootstrap` appends the user's
code folders after site-packages before it runs the worker program. Which of the parent's variables
reach a worker is decided in `supervisor.worker_variables`.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import models
import workers
from orchestrator.envs import Env
from orchestrator.supervisor.worker_variables import passed_environ
from workers.bootstrap import USER_CODE_DIRS_VAR

_SHARED_PACKAGES = (workers, models)


def worker_link_dir(runtime_dir: Path) -> Path:
    """A folder holding links to `workers` and `models` and nothing else: a worker's whole PYTHONPATH."""
    link_dir = runtime_dir / "pythonpath"
    link_dir.mkdir(exist_ok=True)
    for package in _SHARED_PACKAGES:
        link = link_dir / package.__name__
        with contextlib.suppress(FileExistsError):  # another worker of this run made it first
            link.symlink_to(Path(next(iter(package.__path__))).resolve(), target_is_directory=True)
    return link_dir


def worker_environ(
    env: Env, runtime_dir: Path, user_code_dirs: Sequence[Path] = (), extra: Mapping[str, str] | None = None,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Full environment for a worker process in `env`: what may pass of `base` (default: this process's
    environment), the env's activation, the import settings above, then `extra` (the launcher's own: GPU
    share, socket keys)."""
    environ = env.launch_environ(passed_environ(os.environ if base is None else base))
    environ.update({
        "PYTHONPATH": str(worker_link_dir(runtime_dir)),
        USER_CODE_DIRS_VAR: os.pathsep.join(str(Path(d).resolve()) for d in user_code_dirs),
        "PYTHONNOUSERSITE": "1",
        "PYTHONSAFEPATH": "1",
        "PYTHONUNBUFFERED": "1",
    })
    environ.update(extra or {})
    return environ


def worker_argv(env: Env, *args: str) -> list[str]:
    """Exec the env's interpreter directly (no `conda run`, no `uv run`): fast start, signals reach it."""
    return module_argv(env.python, "workers", *args)


def module_argv(python: Path | str, module: str, *args: str) -> list[str]:
    """Run `module` of the shared packages in `python` the way a worker runs: through `workers.bootstrap`."""
    return [str(python), "-s", "-m", "workers.bootstrap", module, *args]
