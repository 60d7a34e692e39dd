"""Which GPUs each worker sees: whole GPUs for `num_gpus` >= 1, a share of one GPU for a fraction, none for 0.

    [(stage, num_gpus) per replica] ──pack_replicas(demands, detect_gpu_count())──▶ [GpuAssignment]
        GpuAssignment((1,), 0.5).environ() ──▶ WorkerSpec.extra_environ
            {"CUDA_VISIBLE_DEVICES": "1", "ORCHESTRATOR_GPU_MEMORY_FRACTION": "0.5"}

Whole-GPU replicas take the lowest GPUs, each for itself alone; fractional replicas are packed
first-fit-decreasing onto the GPUs left, so the shares on one GPU never sum past 1. A share is enforced
only on torch's allocator inside the worker (`workers.gpu`); other libraries there are trusted to fit.
"""

from __future__ import annotations

import math
import os
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from orchestrator.errors import ConfigError
from workers.gpu import MEMORY_FRACTION_VAR

_EPSILON = 1e-9  # shares like 0.1 + 0.2 + 0.7 must still fit on one GPU


@dataclass(frozen=True)
class GpuAssignment:
    """The GPUs one replica sees: none (CPU), whole GPUs, or a `memory_fraction` share of one GPU."""

    devices: tuple[int, ...]
    memory_fraction: float | None = None

    def environ(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The worker's GPU variables; an empty CUDA_VISIBLE_DEVICES hides every GPU. `devices` count the
        GPUs this process sees, so they are translated through `base`'s (default: os.environ) own
        CUDA_VISIBLE_DEVICES when it has one: device 0 of a parent restricted to "2,3" is GPU "2"."""
        visible = _visible_entries(os.environ if base is None else base)
        if visible is not None and (beyond := [i for i in self.devices if i >= len(visible)]):
            raise ConfigError(f"GPU {beyond[0]} was assigned but CUDA_VISIBLE_DEVICES={','.join(visible)!r} lets "
                              f"this process use {len(visible)} GPUs; pass --gpus {len(visible)} or fewer")
        ids = [str(i) if visible is None else visible[i] for i in self.devices]
        # Always set the fraction ("" = no cap) so a value in the parent's environment never leaks through.
        fraction = "" if self.memory_fraction is None else f"{self.memory_fraction:g}"
        return {"CUDA_VISIBLE_DEVICES": ",".join(ids), MEMORY_FRACTION_VAR: fraction}


_CPU = GpuAssignment(())


def _visible_entries(environ: Mapping[str, str]) -> list[str] | None:
    value = environ.get("CUDA_VISIBLE_DEVICES")
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def detect_gpu_count() -> int:
    """GPUs this process may hand out: those `nvidia-smi -L` lists, no more than CUDA_VISIBLE_DEVICES names
    when it is set (set but empty means none); 0 when nvidia-smi is missing or fails."""
    try:
        listing = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return 0
    if listing.returncode != 0:
        return 0
    count = sum(1 for line in listing.stdout.splitlines() if line.startswith("GPU "))  # not the MIG lines
    visible = _visible_entries(os.environ)
    return count if visible is None else min(count, len(visible))


def pack_replicas(demands: Sequence[tuple[str, float]], n_gpus: int) -> list[GpuAssignment]:
    """One assignment per replica, given as (stage name, num_gpus), in input order. With `n_gpus` 0 every
    replica runs on CPU (print `cpu_fallback_warning`); demands that do not fit raise ConfigError."""
    for label, num_gpus in demands:
        _check_demand(label, num_gpus)
    assignments = [_CPU] * len(demands)
    if n_gpus == 0:
        return assignments
    whole_used = 0
    for i, (_, num_gpus) in enumerate(demands):
        if num_gpus >= 1:
            assignments[i] = GpuAssignment(tuple(range(whole_used, whole_used + int(num_gpus))))
            whole_used += int(num_gpus)
    loads: list[float] = []  # shares taken on GPUs whole_used, whole_used + 1, ...
    shared = sorted((i for i, (_, f) in enumerate(demands) if 0 < f < 1), key=lambda i: -demands[i][1])
    for i in shared:
        share = demands[i][1]
        slot = next((g for g, load in enumerate(loads) if load + share <= 1 + _EPSILON), len(loads))
        if slot == len(loads):
            loads.append(0.0)
        loads[slot] += share
        assignments[i] = GpuAssignment((whole_used + slot,), share)
    if whole_used + len(loads) > n_gpus:
        raise ConfigError(_overflow_message(demands, whole_used + len(loads), n_gpus))
    return assignments


def place_replica(placed: Iterable[GpuAssignment], num_gpus: float, n_gpus: int) -> GpuAssignment | None:
    """Where one more replica asking `num_gpus` goes beside the replicas `placed` (a run growing a stage),
    by the rules `pack_replicas` follows: whole GPUs on GPUs nothing uses, a share on the GPU with the least
    room that still fits it (then the lowest); CPU for 0 or without GPUs; None when it does not fit."""
    if num_gpus == 0 or n_gpus == 0:
        return _CPU
    loads = [0.0] * n_gpus
    for assignment in placed:
        for device in assignment.devices:
            loads[device] += 1.0 if assignment.memory_fraction is None else assignment.memory_fraction
    if num_gpus >= 1:
        free = [g for g, load in enumerate(loads) if load == 0]
        return GpuAssignment(tuple(free[: int(num_gpus)])) if len(free) >= num_gpus else None
    fits = [g for g, load in enumerate(loads) if load + num_gpus <= 1 + _EPSILON]
    if not fits:
        return None
    return GpuAssignment((max(fits, key=lambda g: (loads[g], -g)),), num_gpus)


def _check_demand(label: str, num_gpus: float) -> None:
    if not 0 <= num_gpus < math.inf:
        raise ConfigError(f"stage {label!r}: num_gpus must be 0 (CPU), a fraction or a whole number, got {num_gpus}")
    if num_gpus > 1 and num_gpus != int(num_gpus):
        raise ConfigError(f"stage {label!r}: num_gpus above 1 must be a whole number (a replica gets whole GPUs "
                          f"or a share of one GPU), got {num_gpus:g}; use {math.floor(num_gpus)} or "
                          f"{math.ceil(num_gpus)}")


def _overflow_message(demands: Sequence[tuple[str, float]], needed: int, n_gpus: int) -> str:
    totals: dict[str, float] = {}
    for label, num_gpus in demands:
        totals[label] = totals.get(label, 0.0) + num_gpus
    biggest = max(totals, key=lambda label: totals[label])
    per_stage = ", ".join(f"{label} {total:g}" for label, total in totals.items() if total > 0)
    return (f"GPU demand does not fit: stages ask for {sum(totals.values()):g} GPUs in total ({per_stage}), "
            f"{needed} GPUs once packed (a share never spans two GPUs), but {n_gpus} are available; lower "
            f"replicas or num_gpus of stage {biggest!r} ({totals[biggest]:g} GPUs)")


NO_GPU_FOUND = "no GPU was found (nvidia-smi lists none, or CUDA_VISIBLE_DEVICES hides them)"


def cpu_fallback_warning(demands: Sequence[tuple[str, float]], models: Mapping[str, str],
                         missing: str = NO_GPU_FOUND) -> str | None:
    """The one line to print when no GPU was found: which models declare `num_gpus` (each with its stage,
    from `models`: stage -> class path) and now run on CPU; None when no model asked for a GPU. The model's
    own declaration asks for the GPU, so the line names it rather than the config; `missing` says where no
    GPU was found."""
    wanting = list(dict.fromkeys((label, num_gpus) for label, num_gpus in demands if num_gpus > 0))
    if not wanting:
        return None
    named = ", ".join(f"{models.get(label, label)!r} (stage {label!r}) declares num_gpus {num_gpus:g}"
                      for label, num_gpus in wanting)
    many = len(wanting) > 1
    return f"model{'s' if many else ''} {named}, but {missing}; {'they run' if many else 'it runs'} on CPU, slowly"
