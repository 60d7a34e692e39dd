"""One error family: every message says what happened, where, and what to do next."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


class OrchestratorError(Exception):
    """Base of every error the orchestrator reports to a user as one clear line."""


class EnvSpecError(OrchestratorError):
    """An environment declaration (`envs/<name>/environment.yml`) is missing or malformed."""


class LockError(OrchestratorError):
    """A lock is missing, out of date, or would install something it must not."""


class EnvBuildError(OrchestratorError):
    """Building an environment failed; nothing half-built was left behind."""


class ProtocolMismatch(OrchestratorError):
    """A worker spoke a protocol this side does not understand."""


class HandshakeTimeout(OrchestratorError):
    """A worker did not become ready in time."""


class WorkerDied(OrchestratorError):
    """A worker process exited; the message carries the exit status and the tail of its stderr."""

    def __init__(self, message: str, returncode: int | None = None) -> None:
        super().__init__(message)
        self.returncode = returncode


class WorkerError(OrchestratorError):
    """A worker reported an exception (import, setup, a batch or its result) with its traceback."""

    def __init__(self, message: str, request_id: int = 0, stage: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.request_id = request_id
        self.stage = stage
        self.remote_traceback = remote_traceback


class ConfigError(OrchestratorError):
    """A pipeline or download config names something invalid."""


class WeightsMissing(OrchestratorError):
    """A model's weights are not in the local cache; the message gives the command that fetches them."""


class PipelineError(OrchestratorError):
    """A pipeline step cannot go on (a stage's model cannot be set up, a step failed unexpectedly); the run
    stops, keeping every video already finished."""


class OutputFull(PipelineError):
    """The output folder's file system is full: the run stops, keeping every video already finished."""


class OutputBusy(ConfigError):
    """Another run holds the output folder."""


@dataclass(eq=False)
class RunStopped(OrchestratorError):
    """The run ended before its last video: interrupted (Ctrl-C, SIGTERM; `cause` None) or stopped by an
    error while running. Says how much of the work the output folder keeps."""

    cause: Exception | None
    kept: int
    total: int
    out_dir: Path | str
    """The output folder, or the bucket folder's URL."""

    def __str__(self) -> str:
        kept = f"{self.kept} of {self.total} videos kept in {self.out_dir}"
        if self.cause is None:
            return f"interrupted: {kept}; rerun the same command to resume"
        return f"{self.cause} ({kept})"
