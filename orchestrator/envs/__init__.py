"""Where models run: declared, locked, built-once environments.

    envs/<name>/environment.yml ──lock──▶ requirements.lock / conda-lock.yml
                                              │
                          ensure_env(name) ◀──┘  (cached by content hash, file-locked)
                                │
                                ▼
                         Env(python, activation) ──▶ worker argv + env dict
"""

from orchestrator.envs.backends import Env
from orchestrator.envs.registry import EnvRegistry

__all__ = ["Env", "EnvRegistry"]
