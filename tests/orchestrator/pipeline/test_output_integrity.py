"""An output folder is sacred: a second run, a rerun that fails early, `--fresh`, an interrupt, inputs that share
a name, a video replaced mid-run and a full disk never lose or corrupt what it holds. Real runs, real decode,
real workers; the full disk is a real tmpfs."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from orchestrator.sample_video import SampleSpec, generate_sample
from tests.orchestrator.pipeline.runs import DEADLINE_S, outputs, run, start, wait_for, workers_of, write_pipeline
from workers.shm_ring import NAME_PREFIX, SHM_DIR


def snapshot(out: Path) -> dict[str, bytes]:
    """Every result file in the folder, byte for byte (the lock files and scratch excluded)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and not p.name.startswith(".lock") and ".tmp" not in p.parts}


def one_line(result: subprocess.CompletedProcess[str]) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(sample, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, dict[str, bytes]]:
    """A config whose first setup loads slowly when its marker is gone, and a folder it completed."""
    folder = tmp_path_factory.mktemp("finished")
    marker = folder / "slow-setup"
    config, out = write_pipeline(folder, "done", [sample[0]], slow_setup_marker=str(marker))
    marker.touch()
    result = run(config)
    assert result.returncode == 0, result.stderr[-3000:]
    return config, out, snapshot(out)


@pytest.fixture
def folder_copy(finished, tmp_path: Path) -> tuple[Path, Path, dict[str, bytes]]:
    """The finished folder copied for one test, with a config writing into the copy."""
    config, out, before = finished
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    moved = tmp_path / "pipeline.yaml"
    moved.write_text(config.read_text().replace(str(out), str(copy)))
    shutil.copy(config.parent / "controlled_model.py", tmp_path)
    return moved, copy, before


def test_a_second_run_into_a_folder_in_use_is_refused_and_the_first_run_keeps_its_results(sample, tmp_path) -> None:
    config, out = write_pipeline(tmp_path, "busy", [sample[0]], delay_s=0.4)
    first = start(config)
    try:
        wait_for(lambda: (out / ".tmp").is_dir() and any((out / ".tmp").iterdir()), "the first run's first clip")
        os.kill(first.pid, signal.SIGSTOP)  # held mid-run, however slow the second runs start
        try:
            for extra in ([], ["--fresh"]):
                began = time.monotonic()
                second = run(config, *extra)
                assert second.returncode == 2 and time.monotonic() - began < 20
                line = one_line(second)
                assert f"output folder {out} is in use by another run (pid {first.pid} on " in line
        finally:
            os.kill(first.pid, signal.SIGCONT)
        _, stderr = first.communicate(timeout=DEADLINE_S)
    finally:
        first.kill()
        first.wait()
    assert first.returncode == 0, stderr[-3000:]
    rows, summary = outputs(out)
    assert len(rows) == len(sample[1]) and summary["failures"] == [] and not (out / ".previous").exists()
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(Path(r["path"]).name for r in rows if r["path"])


@pytest.mark.parametrize("fresh", [False, True])
def test_a_rerun_with_a_config_error_changes_nothing_and_names_the_real_error(folder_copy, fresh: bool) -> None:
    config, out, before = folder_copy
    config.write_text(config.read_text().replace("controlled_model.ControlledModel", "controlled_model.Nope"))
    result = run(config, *(["--fresh"] if fresh else []))
    assert result.returncode == 2
    line = one_line(result)
    assert "stage 'stats': model 'controlled_model.Nope'" in line and "different pipeline" not in line
    assert snapshot(out) == before and not (out / ".previous").exists() and not (out / ".tmp").exists()


@pytest.fixture
def slow_setup(finished) -> Iterator[Path]:
    """The finished config's slow-setup marker removed for one test: its first setup then loads for a minute
    and creates the marker as it begins."""
    marker = finished[0].parent / "slow-setup"
    marker.unlink()
    yield marker
    marker.touch()


def test_an_interrupt_while_models_load_changes_nothing_and_says_what_is_kept(folder_copy, slow_setup, sample,
                                                                           ) -> None:
    config, out, before = folder_copy
    other = config.parent / "other.mp4"
    shutil.copy(sample[0], other)
    proc = start(config, "--input", str(sample[0]), "--input", str(other))
    try:
        wait_for(slow_setup.exists, "the model's setup to begin")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert f"interrupted: 1 of 2 videos kept in {out}; rerun the same command to resume" in stderr
    assert snapshot(out) == before


def test_inputs_with_one_name_in_two_folders_keep_their_own_clips_and_adding_one_renames_nothing(
        sample, tmp_path: Path) -> None:
    cam1, cam2 = tmp_path / "cam1" / "0001.mp4", tmp_path / "cam2" / "0001.mp4"
    for camera in (cam1, cam2):
        camera.parent.mkdir()
        shutil.copy(sample[0], camera)
    config, out = write_pipeline(tmp_path, "cams", [cam1])
    assert run(config).returncode == 0
    first = snapshot(out / "clips")
    both = run(config, "--input", str(cam1), "--input", str(cam2))
    assert both.returncode == 0, both.stderr[-3000:]
    rows, summary = outputs(out)
    assert summary["resumed"] == 1
    clips = snapshot(out / "clips")
    assert {name: clips[name] for name in first} == first and len(clips) == 2 * len(first)
    assert [(r["video"], r["clip_index"]) for r in rows] == \
        [(str(video), i) for video in (cam1, cam2) for i in range(len(sample[1]))]
    alone = run(config, "--input", str(cam2))  # the folder still holds cam1's finished results
    assert alone.returncode == 0 and snapshot(out / "clips") == clips
    assert [r["video"] for r in outputs(out)[0]] == [str(cam2)] * len(sample[1]) + [str(cam1)] * len(sample[1])


def test_inputs_without_a_video_stop_before_any_worker_and_create_nothing(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    config, out = write_pipeline(tmp_path, "none", [tmp_path / "empty"])
    result = run(config)
    assert result.returncode == 2
    assert f"no video in the inputs {tmp_path / 'empty'}" in one_line(result)
    assert not out.exists()


def test_a_video_replaced_while_the_run_reads_it_is_not_recorded_as_the_new_file(sample, tmp_path: Path) -> None:
    video = tmp_path / "v.mp4"
    shutil.copy(sample[0], video)
    replacement = tmp_path / "replacement.mp4"
    shots = generate_sample(replacement, SampleSpec(shots=((40, None), (40, "HI"))))
    config, out = write_pipeline(tmp_path, "replaced", [video], delay_s=0.5)
    proc = start(config)
    try:
        wait_for(lambda: (out / ".tmp").is_dir() and any((out / ".tmp").iterdir()), "the first clip")
        os.replace(replacement, video)
        _, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    failures = outputs(out)[1]["failures"]
    changed = f"{video}: the file changed while the run read it; rerun the same command to redo it"
    assert [f["reason"] for f in failures] == [changed]
    rerun = run(config)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    rows, summary = outputs(out)
    assert summary["resumed"] == 0 and len(rows) == len(shots)


def test_a_clip_that_fails_is_reported_with_its_index_and_stage(sample, tmp_path: Path) -> None:
    config, out = write_pipeline(tmp_path, "poison", [sample[0]], poison={"8": "exception"})
    result = run(config)
    assert result.returncode == 1
    failures = outputs(out)[1]["failures"]
    assert failures and all(isinstance(f["clip_index"], int) and f["stage"] == "stats" for f in failures)
    assert all(set(f) == {"video", "clip_index", "stage", "reason"} for f in failures)
    assert f"failed: {sample[0]} clip {failures[0]['clip_index']} (stage 'stats'): " in result.stderr


@pytest.fixture(params=[48, 96, 128])
def small_disk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Path]:
    """A real file system (tmpfs) too small for five videos' clips and records: 48 KiB fills while the first
    video's clips are encoded, the larger ones while later videos' clips, parts or metadata are written."""
    mount = tmp_path / "disk"
    mount.mkdir()
    size = f"size={request.param}k"
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_the_run_with_one_line_and_keeps_the_finished_videos(sample, small_disk, tmp_path) -> None:
    videos = [tmp_path / f"v{i}.mp4" for i in range(5)]
    for video in videos:
        shutil.copy(sample[0], video)
    config, _ = write_pipeline(tmp_path, "full", videos)
    out = small_disk / "out"
    proc = start(config, "--output", str(out))
    parent = psutil.Process(proc.pid)
    workers: list[psutil.Process] = []
    try:
        wait_for(lambda: workers.extend(workers_of(parent)) or workers or proc.poll() is not None, "workers")
        _, stderr = proc.communicate(timeout=DEADLINE_S)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in stderr, stderr[-3000:]
    assert str(out) in errors[0] and "no space left on device" in errors[0]
    parts = [json.loads(p.read_text()) for p in (out / ".parts").glob("*.json") if p.name != "pipeline.json"]
    done = sorted((part for part in parts if part["ok"]), key=lambda part: part["video"])
    assert [part["video"] for part in done] == [str(video) for video in videos[: len(done)]]
    assert all((out / row["path"]).is_file() for part in done for row in part["rows"] if row["path"])
    assert f"({len(done)} of 5 videos kept in {out})" in errors[0]
    assert not list(Path(SHM_DIR).glob(f"{NAME_PREFIX}{proc.pid}-*"))
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]


HELD_MODEL = '''\
"""ControlledModel, whose import waits while the file HOLD exists (saying so in IMPORTING): a model that
takes long to import."""
import os
import time

from controlled_model import ControlledModel

while os.path.exists({hold!r}):
    open({importing!r}, "w").close()
    time.sleep(0.05)


class HeldModel(ControlledModel):
    pass
'''


def test_an_interrupt_while_models_import_changes_nothing(sample, tmp_path: Path) -> None:
    hold, importing = tmp_path / "hold", tmp_path / "importing"
    config, out = write_pipeline(tmp_path, "held", [sample[0]])
    (tmp_path / "held_model.py").write_text(HELD_MODEL.format(hold=str(hold), importing=str(importing)))
    config.write_text(config.read_text().replace("controlled_model.ControlledModel", "held_model.HeldModel"))
    assert run(config).returncode == 0
    before = snapshot(out)
    hold.touch()
    proc = start(config)
    try:
        wait_for(importing.exists, "the model's import to begin")
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        hold.unlink()
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr[-3000:]
    assert f"interrupted: 1 of 1 videos kept in {out}; rerun the same command to resume" in stderr
    assert snapshot(out) == before
