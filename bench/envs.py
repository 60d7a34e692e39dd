"""Conda env builds (rattler) against uv builds of the same pip payload, measured in the same run.

    local channel (pyenv's CPython 3.12 + FFmpeg + a noarch package, as the tests build it)
        ├─▶ conda env: rattler installs python, ffmpeg, orchpkg; uv syncs the pip lock; activation ─▶ seconds
        │     cold (empty conda cache) and warm (archives and extracted packages cached)
        ├─▶ uv env: `uv venv` + `uv pip sync` of the same pip lock (uv's own cache warm)           ─▶ seconds
        └─▶ no-op `envs build` of the built conda env: in-process `ensure`, and the CLI end to end   ─▶ seconds

`RATIO` lines give the conda build over the uv build (the extra a conda env costs for its interpreter,
FFmpeg and activation); the no-op figures are checked against the 0.5 s target. One run each.

    .venv/bin/python bench/envs.py
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout, for the tests' channel builder

from orchestrator.envs import EnvRegistry  # noqa: E402
from orchestrator.envs.interpreters import find_interpreter  # noqa: E402
from orchestrator.envs.locking import compile_conda_lock, compile_uv_lock  # noqa: E402
from orchestrator.settings import Settings  # noqa: E402
from tests.support.conda_channel import build_channel  # noqa: E402

NOOP_TARGET_S = 0.5
PIP = "  - pip:\n      - six==1.17.0\n"
CONDA_SPEC = "name: {name}\nchannels: [{channel}]\ndependencies:\n  - python=3.12\n  - ffmpeg\n  - orchpkg=2.0\n" + PIP
UV_SPEC = "name: {name}\ndependencies:\n  - python=3.12\n  - pip\n" + PIP


def timed(action: Callable[[], object]) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def settings_for(root: Path, envs_dir: Path, conda_cache: Path) -> Settings:
    return Settings(envs_dir=envs_dir, env_cache_dir=root, conda_cache=conda_cache,
                    find_links=Settings.from_environ().find_links)


def declare(envs_dir: Path, channel: Path) -> None:
    for name, text in {"bench_conda": CONDA_SPEC, "bench_uv": UV_SPEC}.items():
        (envs_dir / name).mkdir(parents=True)
        (envs_dir / name / "environment.yml").write_text(text.format(name=name, channel=channel.as_uri()))


def noop_cli_seconds(settings: Settings) -> float:
    environ = {**os.environ, "ORCHESTRATOR_ENVS_DIR": str(settings.envs_dir),
               "ORCHESTRATOR_ENV_CACHE": str(settings.env_cache_dir),
               "ORCHESTRATOR_CONDA_CACHE": str(settings.conda_cache)}
    argv = [sys.executable, "-m", "orchestrator.cli", "envs", "build", "bench_conda"]
    return timed(lambda: subprocess.run(argv, env=environ, check=True, capture_output=True))


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="bench-envs-") as tmp:
        work = Path(tmp)
        interpreter = find_interpreter("3.12", "bench")
        channel_s = timed(lambda: build_channel(work / "channel", interpreter.path.resolve().parent.parent,
                                                interpreter.version))
        declare(work / "envs", work / "channel")
        conda_cache = work / "conda-cache"
        first = settings_for(work / "cache-1", work / "envs", conda_cache)
        registry = EnvRegistry(first)
        for name in ("bench_conda", "bench_uv"):
            spec = registry.spec(name)
            if spec.conda_packages:
                compile_conda_lock(spec, first)
            compile_uv_lock(spec, first.find_links)
        uv_s = timed(lambda: registry.ensure("bench_uv"))
        cold_s = timed(lambda: registry.ensure("bench_conda"))
        warm = EnvRegistry(settings_for(work / "cache-2", work / "envs", conda_cache))
        warm_s = timed(lambda: warm.ensure("bench_conda"))
        noop_s = timed(lambda: EnvRegistry(first).ensure("bench_conda"))
        cli_s = noop_cli_seconds(first)
    print(f"local channel built in {channel_s:.2f}s")
    print(f"uv env (python 3.12 + pip lock, uv cache warm):        {uv_s:6.2f}s")
    print(f"conda env, cold conda cache (rattler + the same lock): {cold_s:6.2f}s")
    print(f"conda env, warm conda cache:                           {warm_s:6.2f}s")
    print(f"RATIO conda cold / uv: {cold_s / uv_s:.2f}")
    print(f"RATIO conda warm / uv: {warm_s / uv_s:.2f}")
    for label, seconds in (("no-op ensure, in process", noop_s), ("no-op `orchestrator envs build`, CLI", cli_s)):
        verdict = "ok" if seconds <= NOOP_TARGET_S else f"over the {NOOP_TARGET_S}s target"
        print(f"{label}: {seconds:.3f}s ({verdict})")


if __name__ == "__main__":
    main()
