"""`python -s -m workers.bootstrap MODULE [ARGS...]`: the first code a worker process runs.

    sys.path:  [link folder: workers, models]  [stdlib]  [the env's site-packages]  [user code folders]
                 (PYTHONPATH)                                                         (appended here)

It puts the folders the parent names in `USER_CODE_DIRS_VAR` (a config's folder, the current
directory: where user model modules live) at the END of sys.path, then runs MODULE (`workers`, the
worker program) as `__main__`. Appended after site-packages, a user folder can add modules but never
shadow an installed one: a stray `numpy.py` beside a config cannot break a worker. Stdlib only, and
nothing is imported from a user folder before they are in place.
"""

from __future__ import annotations

import os
import runpy
import sys

USER_CODE_DIRS_VAR = "ORCHESTRATOR_USER_CODE_DIRS"
"""os.pathsep-separated folders the launcher wants importable after the env's own packages."""


def add_user_code_dirs() -> None:
    """Append the user's code folders to sys.path, after everything the interpreter put there."""
    for folder in os.environ.get(USER_CODE_DIRS_VAR, "").split(os.pathsep):
        if folder and folder not in sys.path:
            sys.path.append(folder)


def main(argv: list[str]) -> None:
    if not argv:
        raise SystemExit("usage: python -s -m workers.bootstrap MODULE [ARGS...]")
    # Python < 3.11 ignores PYTHONSAFEPATH and puts the current directory first: take it out again.
    if sys.path and sys.path[0] == os.getcwd():
        del sys.path[0]
    add_user_code_dirs()
    module, *args = argv
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main(sys.argv[1:])
