"""YAML as the orchestrator reads it: one wording for syntax errors in every file, and the line each value
sits on, so that an error about a field can name the line an editor shows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml


def describe_yaml_error(path: Path, exc: yaml.YAMLError) -> str:
    """`<path>: line N is not valid YAML (<problem>)`, the line being 1-based as editors show it."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}" if mark else "the file"
    return f"{path}: {where} is not valid YAML ({getattr(exc, 'problem', None) or exc})"


def load_with_nodes(text: str) -> tuple[Any, yaml.Node | None]:
    """The document's data (as `yaml.safe_load` gives it) and its node tree, which knows where each value is;
    raises yaml.YAMLError."""
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        return (loader.construct_document(node) if node is not None else None), node
    finally:
        loader.dispose()


def line_of(node: yaml.Node | None, where: Sequence[int | str]) -> int | None:
    """The 1-based line of the entry at `where` (mapping keys and list indexes from the top): a mapping entry's
    key line, a list item's first line; for an entry the document lacks, the line of what lacks it. None
    without a node."""
    if node is None:
        return None
    line = node.start_mark.line
    for step in where:
        if isinstance(node, yaml.MappingNode) and isinstance(step, str):
            entry = next(((key, value) for key, value in node.value if key.value == step), None)
            if entry is None:
                break
            line, node = entry[0].start_mark.line, entry[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and 0 <= step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line
        else:
            break
    return line + 1
