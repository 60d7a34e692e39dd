"""Two half-GPU replicas of a small torch model against a CPU replica: each sees exactly one GPU, is held to
its half, and computes what the CPU computes.

    pack_replicas([("mlp", 0.5)] * 2, detect_gpu_count()) ──▶ GpuAssignment.environ() ──▶ WorkerSpec.extra_environ
    cpu replica   (CUDA_VISIBLE_DEVICES="")             ─┐
    mlp/0, mlp/1  (CUDA_VISIBLE_DEVICES=<gpu>, fraction) ─┴─ same input ──▶ PASS/FAIL lines, exit 1 on any FAIL

Without a GPU the two replicas fall back to CPU and only the CPU path is checked. The default env
(video_splitting) has CPU-only torch: on a GPU machine pass an interpreter with CUDA torch.

    .venv/bin/python bench/gpu_check.py [--python /path/to/env/bin/python]
"""

from __future__ import annotations

import argparse
import contextlib
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.envs import Env, EnvRegistry
from orchestrator.pipeline.media.hardware import hardware_problem
from orchestrator.pipeline.scaling.gpus import GpuAssignment, cpu_fallback_warning, detect_gpu_count, pack_replicas
from orchestrator.supervisor.handle import ModelRef, WorkerHandle, WorkerSpec
from orchestrator.supervisor.runtime_dir import make_runtime_dir

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))  # gpu_models, for reading num_gpus here as the pipeline would

from gpu_models import IN_FEATURES, TinyMLP  # noqa: E402

TOLERANCE = 1e-4
CALL_TIMEOUT_S = 120.0


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--python", type=Path, help="interpreter of an env with torch (and pyzmq, msgpack, numpy); "
                                                     "default: the project's video_splitting env")
    return parser.parse_args()


def resolve_env(python: Path | None) -> Env:
    if python is None:
        return EnvRegistry().ensure("video_splitting")
    python = python.absolute()  # not resolve(): a venv's python is a symlink to its base interpreter
    return Env("gpu-check", "existing", python.parent.parent, python)


@contextlib.contextmanager
def replica(env: Env, runtime_dir: Path, label: str, assignment: GpuAssignment) -> Iterator[WorkerHandle]:
    model = ModelRef("gpu_models.TinyMLP", {"conda_env_name": env.name})
    spec = WorkerSpec(label, env, model, (BENCH_DIR,), assignment.environ())
    with WorkerHandle(spec, runtime_dir) as handle:
        handle.start()
        yield handle


def check(ok: bool, what: str) -> bool:
    print(f"{'PASS' if ok else 'FAIL'} {what}")
    return ok


def check_replica(label: str, assignment: GpuAssignment, result: dict[str, Any], reference: dict[str, Any]) -> bool:
    ok = True
    where = f"device {result['device']}, torch {result['torch']} (CUDA {result['torch_cuda']})"
    if assignment.devices:
        ok &= check(result["device"] == "cuda" and result["visible_devices"] == 1,
                    f"{label} sees exactly one GPU: torch sees {result['visible_devices']} with "
                    f"CUDA_VISIBLE_DEVICES={assignment.environ()['CUDA_VISIBLE_DEVICES']}; {where}")
        ok &= check(result["memory_fraction"] == assignment.memory_fraction and result.get("over_cap_refused") is True,
                    f"{label} capped at {assignment.memory_fraction}: given {result['memory_fraction']}, "
                    f"allocation over the cap refused: {result.get('over_cap_refused')}, "
                    f"{result.get('memory_allocated')} of {result.get('total_memory')} bytes allocated")
    else:
        ok &= check(result["device"] == "cpu" and result["visible_devices"] == 0, f"{label} runs on CPU; {where}")
    diff = float(np.max(np.abs(result["output"] - reference["output"])))
    return ok & check(diff <= TOLERANCE, f"{label} matches the CPU run within {TOLERANCE:g} (max |diff| {diff:.2e})")


def main() -> int:
    args = parse_args()
    env = resolve_env(args.python)
    demands = [("mlp", TinyMLP(env.name).num_gpus)] * 2
    n_gpus = detect_gpu_count()
    assignments = pack_replicas(demands, n_gpus)
    if n_gpus == 0:
        print(f"no GPU: {cpu_fallback_warning(demands)}; checking the CPU path only")
    print(f"env {env.name} ({env.python}), {n_gpus} GPU(s): "
          + ", ".join(f"mlp/{i} -> {a.environ()}" for i, a in enumerate(assignments)))
    x = np.random.default_rng(0).standard_normal((8, IN_FEATURES), dtype=np.float32)
    runtime_dir = make_runtime_dir("gpu-check-")
    try:
        with contextlib.ExitStack() as stack:  # all replicas up at once: shares of one GPU must coexist
            cpu = stack.enter_context(replica(env, runtime_dir, "cpu", GpuAssignment(())))
            handles = [stack.enter_context(replica(env, runtime_dir, f"mlp/{i}", a)) for i, a in enumerate(assignments)]
            reference = cpu.call(x, timeout=CALL_TIMEOUT_S)
            results = [handle.call(x, timeout=CALL_TIMEOUT_S) for handle in handles]  # one at a time: cap probes
    finally:
        shutil.rmtree(runtime_dir, ignore_errors=True)
    ok = check(reference["device"] == "cpu" and reference["visible_devices"] == 0,
               'cpu replica sees no GPU (CUDA_VISIBLE_DEVICES="")')
    for i, (assignment, result) in enumerate(zip(assignments, results, strict=True)):
        ok &= check_replica(f"mlp/{i}", assignment, result, reference)
    if n_gpus:  # media workers use NVDEC/NVENC only where this opens them
        problem = hardware_problem()
        ok &= check(problem is None, f"NVENC opens for the media workers: {problem or 'yes'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
