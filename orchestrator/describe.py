"""Learn what configured models declare without ever importing their code in this process.

    requests ──env named in the config? ──▶ the source's literal conda_env_name? (model_source)
             ──▶ else a child of this interpreter describes it (guarded imports work there) ──▶ env names
    env names ──EnvRegistry.ensure──▶ one `<env python> -m workers.describe` per env, side by side
             ──▶ ModelDeclarations, or a DescribeFailure that explains itself, per request, in order

A model module may import torch at its top: only the child running in the model's env imports it.
The children run without the worker marker (`models.conda_utils.WORKER_ENV_VAR`), so imports guarded
by `is_running_in_env` (needed by `setup()` alone) are skipped as they used to be in the parent: a
describe costs the module's unguarded imports only, not transformers' ten seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from models.conda_utils import WORKER_ENV_VAR
from orchestrator.declarations import ModelDeclarations
from orchestrator.envs import Env
from orchestrator.errors import ConfigError, OrchestratorError
from orchestrator.model_source import locate_source, static_env_name
from orchestrator.supervisor.events import describe_exit
from orchestrator.supervisor.launch import module_argv, worker_environ

DESCRIBE_TIMEOUT_S = 300.0
"""Per describe process: room for importing torch and building small constructors on a slow disk."""

STDERR_TAIL_CHARS = 2000

_PASSED_THROUGH = ("ModelLoadError", "InvalidDeclaration")
"""Failures whose message already says what is wrong and where (`workers.model_loader`, the checks here)."""


@dataclass(frozen=True)
class DescribeRequest:
    """A model as a config names it: the class path (file paths absolute), its params, and its env if named."""

    class_path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    env: str | None = None


@dataclass(frozen=True)
class DescribeFailure:
    """Why a model could not be described: the child's exception, and where it ran (None: this interpreter)."""

    type: str
    message: str
    missing_module: str | None = None
    env: str | None = None

    def explain(self, request: DescribeRequest, search_dirs: Sequence[Path] = ()) -> str:
        """One line naming the model, its file, the missing package when that is the cause, and the fix."""
        if self.missing_module and not _is_own_module(request.class_path, self.missing_module):
            located = locate_source(request.class_path, search_dirs)
            subject = f"model {request.class_path!r}"
            if located is not None and ":" not in request.class_path:
                subject += f" ({located[0]})"
            package = self.missing_module.partition(".")[0]
            if self.env is None:
                return (f"{subject} imports {package!r} (No module named {self.missing_module!r} in the "
                        f"orchestrator's environment), and its env cannot be read from the source: add `env: <name>` "
                        f"to the stage/entry, or guard the import with `if conda_utils.is_running_in_env(\"<name>\"):`")
            return (f"{subject} does not import in env {self.env!r}: it imports {package!r} (No module named "
                    f"{self.missing_module!r}): add it to envs/{self.env}/environment.yml and run "
                    f"`orchestrator envs lock {self.env}`, or name an env that has it with `env:`")
        if self.missing_module and self.env is None:
            return (f"{self.message}; if the module is installed only in the model's env, add `env: <name>` to the "
                    f"stage/entry")
        if self.type in _PASSED_THROUGH:
            return self.message
        return (f"model {request.class_path!r} failed to import or to accept params {dict(request.params)}: "
                f"{self.type}: {self.message}")


Described = ModelDeclarations | DescribeFailure


class DescribeError(OrchestratorError):
    """A describe process failed as a whole: it could not start, crashed, timed out or answered garbage."""


def _is_own_module(class_path: str, missing: str) -> bool:
    """True when the module that is missing is the one the class path names (a typo, not a package)."""
    if ":" in class_path:
        return False
    module = class_path.rpartition(".")[0]
    return module == missing or module.startswith(missing + ".")


def run_describe(python: Path | str, environ: Mapping[str, str], requests: Sequence[DescribeRequest],
                 env: str | None = None, timeout_s: float = DESCRIBE_TIMEOUT_S) -> list[Described]:
    """Describe `requests` in one `<python> -m workers.describe` process, one outcome per request."""
    payload = json.dumps([{"class_path": r.class_path, "params": dict(r.params)} for r in requests])
    where = f"{python} -m workers.describe" + (f" (env {env!r})" if env else "")
    models = ", ".join(r.class_path for r in requests)
    try:
        done = subprocess.run(module_argv(python, "workers.describe"), input=payload, env=dict(environ),
                              capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise DescribeError(f"{where} took longer than {timeout_s:.0f}s describing {models}: a module import "
                            f"or a constructor is stuck") from None
    except OSError as exc:
        raise DescribeError(f"cannot start {where}: {exc.strerror}") from None
    try:
        replies = json.loads(done.stdout)
    except ValueError:
        replies = None
    if done.returncode != 0 or not isinstance(replies, list) or len(replies) != len(requests):
        raise DescribeError(f"{where} failed ({describe_exit(done.returncode)}) describing {models}; its stderr "
                            f"ends: {done.stderr[-STDERR_TAIL_CHARS:].strip() or '(empty)'}")
    return [_decode(reply, env) for reply in replies]


def _decode(reply: Any, env: str | None) -> Described:
    if isinstance(reply, dict) and reply.get("ok") is True:
        try:
            return ModelDeclarations.from_dict(reply.get("declarations") or {})
        except ConfigError as exc:
            return DescribeFailure("InvalidDeclaration", str(exc), env=env)
    error = reply.get("error") if isinstance(reply, dict) else None
    if not isinstance(error, dict):
        raise DescribeError(f"a describe process answered {reply!r}, which is neither declarations nor an error")
    return DescribeFailure(str(error.get("type")), str(error.get("message")), error.get("missing_module"), env)


def _describe_environ(env: Env | None, runtime_dir: Path, search_dirs: Sequence[Path]) -> dict[str, str]:
    """A worker's environment for `env` (None: this interpreter's own), minus the worker marker."""
    own = Env("orchestrator", "existing", Path(sys.prefix), Path(sys.executable))
    environ = worker_environ(env or own, runtime_dir, search_dirs)
    environ.pop(WORKER_ENV_VAR, None)
    return environ


def env_names(requests: Sequence[DescribeRequest], search_dirs: Sequence[Path] = (),
              timeout_s: float = DESCRIBE_TIMEOUT_S) -> list[str | DescribeFailure]:
    """Each request's env: the one it names, else its source's literal, else what a child of this
    interpreter reads from it (a module that guards its env-only imports imports here)."""
    names: list[str | DescribeFailure | None] = [r.env or static_env_name(r.class_path, search_dirs)
                                                 for r in requests]
    unknown = [i for i, name in enumerate(names) if name is None]
    if unknown:
        with tempfile.TemporaryDirectory(prefix="orch-describe-") as runtime_dir:
            environ = _describe_environ(None, Path(runtime_dir), search_dirs)
            outcomes = run_describe(sys.executable, environ, [requests[i] for i in unknown], timeout_s=timeout_s)
        for i, outcome in zip(unknown, outcomes, strict=True):
            names[i] = outcome.conda_env_name if isinstance(outcome, ModelDeclarations) else outcome
    return [name for name in names if name is not None]


def describe_in_envs(placed: Sequence[tuple[DescribeRequest, Env]], search_dirs: Sequence[Path] = (),
                     timeout_s: float = DESCRIBE_TIMEOUT_S) -> list[Described]:
    """Describe each request inside its env: one process per env, all envs at once; outcomes in order."""
    groups: dict[str, list[int]] = {}
    for index, (_, env) in enumerate(placed):
        groups.setdefault(env.name, []).append(index)
    outcomes: list[Described | None] = [None] * len(placed)
    with tempfile.TemporaryDirectory(prefix="orch-describe-") as runtime_dir:

        def describe_group(indices: list[int]) -> list[Described]:
            env = placed[indices[0]][1]
            environ = _describe_environ(env, Path(runtime_dir), search_dirs)
            return run_describe(env.python, environ, [placed[i][0] for i in indices], env.name, timeout_s)

        with ThreadPoolExecutor(max_workers=max(1, len(groups))) as pool:
            for indices, described in zip(groups.values(), pool.map(describe_group, groups.values()), strict=True):
                for index, outcome in zip(indices, described, strict=True):
                    outcomes[index] = outcome
    return [outcome for outcome in outcomes if outcome is not None]
