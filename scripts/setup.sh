#!/usr/bin/env bash
# Create the orchestrator's own light environment (.venv) exactly as uv.lock pins it, then build every model
# env from its lock. Safe to run again: with nothing changed it only checks (a second or two, mostly the
# model envs' check), and after uv.lock changes it brings .venv to the new lock.
#
#   uv.lock ──(uv's own pin and hashes)──▶ pip installs that uv into .uv/ ──▶ uv sync --frozen ──▶ .venv
#
# Everything comes from PyPI, every file checked against the lock's hashes. PYTHON picks the interpreter
# (default python3, 3.11 or newer); uv never downloads one. The report's browser test needs headless Chromium:
# when it is missing and this runs as root with apt, Debian's package is installed (SKIP_CHROMIUM=1 skips it).
set -euo pipefail
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}

# The uv release uv.lock pins, as a pip requirement with the hash of each of its files.
uv_requirement() {
    "$python" - <<'EOF'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"scripts/setup.sh needs Python 3.11 or newer as python3 (or PYTHON=...), not {sys.version.split()[0]}")
import tomllib
with open("uv.lock", "rb") as lock:
    uv = next(p for p in tomllib.load(lock)["package"] if p["name"] == "uv")
hashes = " ".join(f"--hash={w['hash']}" for w in uv["wheels"])
print(f"uv=={uv['version']} {hashes}")
EOF
}

locked_uv=$(grep -A1 -x 'name = "uv"' uv.lock | sed -n 's/^version = "\(.*\)"$/\1/p')
if [ "$(.uv/bin/uv --version 2>/dev/null | cut -d' ' -f2)" != "$locked_uv" ]; then
    requirement=$(uv_requirement)
    rm -rf .uv
    # -qq: the machine's pip config may name extra indexes that lack uv; the hashes decide what is installed
    "$python" -m pip install -qq --disable-pip-version-check --root-user-action=ignore --no-deps \
        --require-hashes --target .uv -r <(echo "$requirement")
fi
# the interpreter's own path, not a name any interpreter answers to: a .venv made by another one is remade
interpreter=$("$python" -c 'import sys; print(sys.executable)')
.uv/bin/uv sync --quiet --frozen --extra test --extra ray --python "$interpreter" --no-python-downloads
.venv/bin/orchestrator envs build

# Debian's chromium, for the test that loads the HTML report in a real headless browser (quiet, bounded).
if [ -z "${SKIP_CHROMIUM:-}" ] && ! command -v chromium >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing chromium (Debian's package) for the report's browser test..."
        if ! { timeout 600 apt-get update -qq && DEBIAN_FRONTEND=noninteractive timeout 900 \
                apt-get install -y -qq --no-install-recommends chromium; } >/tmp/orchestrator-chromium.log 2>&1; then
            echo "warning: installing chromium failed (see /tmp/orchestrator-chromium.log); tests/orchestrator/test_report.py needs it" >&2
        fi
    else
        echo "note: chromium is missing and this is not root with apt-get; install Chromium for tests/orchestrator/test_report.py" >&2
    fi
fi
