"""A dedup pass SIGKILLed at seeded random moments (before one of its file replacements or removals): every
video is left as it was or fully updated, and the rerun reaches exactly the rows and clip files an
uninterrupted pass makes."""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.orchestrator.dataset.dedup_folders import KEY, make_folder, read_parts

ROOT = Path(__file__).resolve().parents[3]
CHILD = """
import json, os, signal, sys
from pathlib import Path
kill_at, calls = int(sys.argv[2]), [0]
def kill_point(real):
    def call(*args, **kwargs):
        calls[0] += 1
        if calls[0] == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return real(*args, **kwargs)
    return call
os.replace, os.unlink = kill_point(os.replace), kill_point(os.unlink)
from orchestrator.dataset.dedup_writer import DedupingWriter
from orchestrator.pipeline.config import StageConfig
stage = StageConfig.model_validate({"name": "dedup", "dedup": {"column": "vec.embedding", "method": "semantic",
                                                               "threshold": 0.97}})
DedupingWriter(Path(sys.argv[1]), json.loads(sys.argv[3]), [], dedup=[stage]).finish_dedup()
print(calls[0])
"""


def dedup(out: Path, kill_at: int = 0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", CHILD, str(out), str(kill_at), json.dumps(KEY)], cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True, timeout=60)


def state(out: Path) -> tuple[dict[str, list[dict]], set[str]]:
    return read_parts(out), {p.name for p in (out / "clips").iterdir()}


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, int]:
    """The folder before any pass, the folder after an uninterrupted one, and the kill points it passed."""
    before, after = tmp_path_factory.mktemp("before") / "out", tmp_path_factory.mktemp("after") / "out"
    make_folder(before)
    shutil.copytree(before, after)
    done = dedup(after)
    assert done.returncode == 0, done.stderr
    return before, after, int(done.stdout)


@pytest.mark.parametrize("seed", range(5))
def test_a_pass_killed_anywhere_leaves_each_video_whole_and_the_rerun_reaches_the_same_result(
        folders: tuple[Path, Path, int], tmp_path: Path, seed: int) -> None:
    before, after, points = folders
    (old, _), (new, new_files) = state(before), state(after)
    assert sum(r["path"] is None for rows in new.values() for r in rows) >= 8  # the pass has work to do
    out = tmp_path / "out"
    shutil.copytree(before, out)
    killed = dedup(out, kill_at=random.Random(seed).randint(1, points))
    assert killed.returncode == -9
    parts, _ = state(out)
    assert all(parts[v] in (old[v], new[v]) for v in old)
    again = dedup(out)
    assert again.returncode == 0, again.stderr
    assert state(out) == (new, new_files)
