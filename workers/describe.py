"""What a model declares, read by instantiating it (never `setup()`), in whatever process runs this.

    stdin  [{"class_path": "pkg.mod.Class" | "/abs/file.py:Class", "params": {...}}, ...]
      │   one process describes a batch: each entry imported and instantiated, then its declarations read
    stdout [{"ok": true, "declarations": {...}} | {"ok": false, "error": {"type", "message", "missing_module"?}}]

The orchestrator runs `<env python> -m workers.describe` so a model's module is only ever imported in
a child, usually inside the model's own env. A failure is reported per entry, never as a crash, with
the name of the module that is not installed when that is the cause. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

from models.model_interface import ModelInterface
from workers.model_loader import instantiate


def describe(model: ModelInterface) -> dict[str, Any]:
    """The model's declarations as plain JSON-ready data (the shape the parent decodes)."""
    window = model.split_window
    return {
        "class": type(model).__qualname__,
        "conda_env_name": model.conda_env_name,
        "weights_names": list(model.weights_names),
        "id_file_mapping": {name: None if files is None else list(files)
                            for name, files in dict(model.id_file_mapping).items()},
        "num_gpus": model.num_gpus,
        "batched": model.batched,
        "split_window": None if window is None else {"step": window.step, "context": window.context},
        "outputs": None if model.outputs is None else dict(model.outputs),
    }


def missing_module(exc: BaseException) -> str | None:
    """The module a ModuleNotFoundError in `exc`'s chain names (the package to install), if any."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, ModuleNotFoundError) and current.name:
            return current.name
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def describe_request(request: dict[str, Any]) -> dict[str, Any]:
    """One entry's reply: its declarations, or what went wrong importing, constructing or reading it."""
    try:
        declarations = describe(instantiate(request["class_path"], request.get("params") or {}))
        json.dumps(declarations)  # a declaration of the wrong type fails here, for this entry alone
    except Exception as exc:  # a module body, a constructor or a property raises whatever it likes
        error = {"type": type(exc).__name__, "message": str(exc)}
        if (name := missing_module(exc)) is not None:
            error["missing_module"] = name
        return {"ok": False, "error": error}
    return {"ok": True, "declarations": declarations}


def main() -> None:
    """Read the requests, describe each, write the replies; anything a model prints goes to stderr."""
    requests = json.load(sys.stdin)
    # fd 1 carries only the JSON reply: a model module printing at import (from Python or native code)
    # writes to stderr instead.
    reply = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    replies = [describe_request(request) for request in requests]
    with reply:
        json.dump(replies, reply)


if __name__ == "__main__":
    main()
