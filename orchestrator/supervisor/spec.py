"""What a worker is asked to run: a model class with its params, in an env, under a label."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.envs import Env


@dataclass(frozen=True)
class ModelRef:
    """A model class path (`module.Class` or `file.py:Class`) and its constructor params."""

    class_path: str
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WorkerSpec:
    label: str
    env: Env
    model: ModelRef
    user_code_dirs: tuple[Path, ...] = ()
    extra_environ: Mapping[str, str] = field(default_factory=dict)
    setup_options: Mapping[str, Any] = field(default_factory=dict)
    """Extra SETUP header fields for the worker (how to hand the model its input, thread budget)."""
    frames_dir: Path | None = None
    """The run's frames folder (`workers.shared_frames`): requests may name frames a media worker left there."""
