"""A small torch model for `bench/gpu_check.py`: fixed weights, and a report of the GPU it was given."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from models.model_interface import ModelInterface
from workers.gpu import MEMORY_FRACTION_VAR

IN_FEATURES, HIDDEN, OUT_FEATURES = 64, 256, 16
OVER_CAP_MARGIN = 0.1
"""The cap probe asks for (fraction + this) of the GPU: refused only if the cap is really applied."""


class TinyMLP(ModelInterface):
    """A fixed-seed MLP on `cuda` when the worker sees a GPU, else on CPU. torch is imported only in `setup`,
    so the parent can read `num_gpus` without it."""

    def __init__(self, conda_env_name: str, num_gpus: float = 0.5) -> None:
        self._env = conda_env_name
        self._num_gpus = num_gpus

    @property
    def conda_env_name(self) -> str:
        return self._env

    @property
    def num_gpus(self) -> float:
        return self._num_gpus

    def setup(self) -> None:
        import torch

        torch.set_float32_matmul_precision("highest")  # no TF32: a GPU result must match the CPU one to 1e-4
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(IN_FEATURES, HIDDEN), torch.nn.ReLU(),
                                  torch.nn.Linear(HIDDEN, OUT_FEATURES))  # built on CPU: same weights anywhere
        self.torch = torch
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.net = net.to(self.device).eval()

    def __call__(self, x: np.ndarray) -> dict[str, Any]:
        torch = self.torch
        with torch.no_grad():
            output = self.net(torch.from_numpy(x).to(self.device)).cpu().numpy()
        fraction = os.environ.get(MEMORY_FRACTION_VAR)
        report: dict[str, Any] = {
            "output": output, "device": self.device.type, "visible_devices": torch.cuda.device_count(),
            "torch": torch.__version__, "torch_cuda": torch.version.cuda,
            "memory_fraction": float(fraction) if fraction else None,
        }
        if self.device.type == "cuda":
            total = torch.cuda.get_device_properties(0).total_memory
            report.update(total_memory=total, memory_allocated=torch.cuda.memory_allocated(0))
            if fraction:
                report["over_cap_refused"] = self._refuses(int(total * (float(fraction) + OVER_CAP_MARGIN)))
        return report

    def _refuses(self, n_bytes: int) -> bool:
        """Whether allocating `n_bytes` on the GPU fails; a block that succeeds is handed back to the device."""
        torch = self.torch
        try:
            block = torch.empty(n_bytes, dtype=torch.uint8, device=self.device)
        except torch.cuda.OutOfMemoryError:
            return True
        del block
        torch.cuda.empty_cache()
        return False
