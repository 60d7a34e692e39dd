"""Hold a worker to its share of one GPU when the parent gave it a fraction (`num_gpus` < 1).

The parent sets `CUDA_VISIBLE_DEVICES` (which GPU) and `MEMORY_FRACTION_VAR` (how much of it); only
the second needs code here. torch is imported only if this env has it, so other envs never pay for it.
"""

from __future__ import annotations

import importlib.util
import os

MEMORY_FRACTION_VAR = "ORCHESTRATOR_GPU_MEMORY_FRACTION"


def apply_memory_cap() -> float | None:
    """Cap torch's allocator on the worker's one visible GPU; the fraction applied, or None if there
    was no fraction to apply, no torch in this env, or no CUDA device."""
    value = os.environ.get(MEMORY_FRACTION_VAR)
    if not value or importlib.util.find_spec("torch") is None:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    fraction = float(value)
    torch.cuda.set_per_process_memory_fraction(fraction, 0)
    return fraction
