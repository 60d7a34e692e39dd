"""One wording for YAML syntax errors in every file the orchestrator reads."""

from __future__ import annotations

from pathlib import Path

import yaml


def describe_yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """`<path>: line N is not valid YAML (<problem>)`, the line being 1-based as editors show it."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark else "the file"
    return f"{path}: {where} is not valid YAML ({getattr(exc, 'problem', None) or exc})"
