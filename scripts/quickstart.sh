#!/usr/bin/env bash
# Set up from a fresh clone, then run the quickstart over the bundled sample (output: out/quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python examples/quickstart.py "$@"
