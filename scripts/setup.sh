#!/usr/bin/env bash
# Create the orchestrator's own light environment (.venv) and build every model env from its lock.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[test,ray]'
.venv/bin/orchestrator envs build
