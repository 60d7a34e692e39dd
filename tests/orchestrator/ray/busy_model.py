"""A model whose calls can be seen under way: each first creates a file in `marks`, then works `delay_s`.
Set up, it starts a child process of its own (in its worker's process group) and names it in `marks`."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

from models.model_interface import ModelInterface


class BusyModel(ModelInterface):
    def __init__(self, env: str, marks: str, delay_s: float) -> None:
        self._env = env
        self.marks = Path(marks)
        self.delay_s = delay_s

    @property
    def conda_env_name(self) -> str:
        return self._env

    def setup(self) -> None:
        self.marks.mkdir(parents=True, exist_ok=True)
        self.child = subprocess.Popen(["sleep", "600"])
        (self.marks / f"child-{self.child.pid}").touch()

    def __call__(self, batch: Any) -> Any:
        (self.marks / f"call-{os.getpid()}-{time.monotonic_ns()}").touch()
        time.sleep(self.delay_s)
        return batch
