"""Where models run: declared, locked, built-once environments.

    envs/<name>/environment.yml ──lock──▶ requirements.lock (+ conda-lock.yml when it has conda packages)
    envs/<name>/pixi.toml ──pixi lock──▶ pixi.lock   │
                                                     │
               EnvRegistry().ensure(name) ◀──────────┘  (cached by content hash, file-locked)
                                │
                                ▼
                         Env(python, activation) ──▶ worker argv + env dict (supervisor.launch)
"""

from orchestrator.envs.backends import Env
from orchestrator.envs.registry import EnvRegistry

__all__ = ["Env", "EnvRegistry"]
