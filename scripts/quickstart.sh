#!/usr/bin/env bash
# Set up from a fresh clone, then run the quickstart pipeline over the bundled sample (output: out/quickstart/).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
[ -f examples/sample/sample.mp4 ] || .venv/bin/python -m orchestrator.sample_video examples/sample/sample.mp4
.venv/bin/orchestrator run examples/quickstart.yaml "$@"
