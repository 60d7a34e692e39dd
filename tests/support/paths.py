"""Where the tests find the project, their fixture models and the command line."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures"
ORCHESTRATOR = [sys.executable, "-m", "orchestrator.cli"]
"""The command line, run by this interpreter (the orchestrator's own env)."""
