"""`orchestrator run` end to end: real decode, real models in their envs, outputs checked against ground truth."""

from __future__ import annotations

import json
import shutil
import signal
import time
from pathlib import Path

import av
import psutil
import pytest

from tests.orchestrator.pipeline.runs import ROOT, comparable, outputs, run, start, workers_of, write_pipeline


def test_quickstart_config_end_to_end(sample, tmp_path: Path) -> None:
    video, shots = sample
    out = tmp_path / "out"
    result = run(ROOT / "examples" / "quickstart.yaml", "--input", str(video), "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert len(rows) == len(shots)
    for row, shot in zip(rows, shots, strict=True):
        assert abs(row["start_frame"] - shot.start_frame) <= 1 and abs(row["end_frame"] - shot.end_frame) <= 1
        assert row["ocr"]["text"].replace(" ", "") == (shot.text or "").replace(" ", "")
        assert 0.0 <= row["content"]["unsafe_score"] <= 1.0
        if (shot.end_frame - shot.start_frame + 1) / 24 < 1.5:
            assert row["path"] is None and row["filtered_by"] == ["keep:min_duration_s"]
            continue
        assert row["path"] is not None and row["filtered_by"] is None
        with av.open(str(out / row["path"])) as clip:
            assert sum(1 for _ in clip.decode(video=0)) == row["end_frame"] - row["start_frame"] + 1
    assert summary["videos"] == summary["videos_done"] == 1 and summary["failures"] == []
    assert summary["clips"] == len(rows) and summary["kept"] == sum(1 for r in rows if r["path"])
    assert summary["stages"]["ocr"]["items"] == len(rows)
    assert summary["stages"]["shots"]["items"] == 2  # the split stage's items are windows of up to 200 frames
    assert sorted(p.name for p in (out / "clips").iterdir()) == sorted(Path(r["path"]).name for r in rows if r["path"])
    assert 0 < summary["kept"] < len(rows)
    assert "[shots/0]" not in result.stdout


def test_replicas_batches_and_a_killed_worker_give_the_same_outputs_in_order(sample, tmp_path: Path) -> None:
    video, shots = sample
    second = tmp_path / "second.mp4"
    shutil.copy(video, second)
    results = {}
    for name, kwargs in {"one": {}, "many": {"replicas": 2, "batch": 2, "delay_s": 0.3},
                         "killed": {"replicas": 2, "fail_in": "batch_once"}}.items():
        config, out = write_pipeline(tmp_path, name, [video, second], **kwargs)
        result = run(config)
        assert result.returncode == 0, result.stderr[-3000:]
        results[name] = outputs(out)
    rows, summary = results["one"]
    assert [(Path(r["video"]).name, r["clip_index"]) for r in rows] == \
        [(v, i) for v in ("sample.mp4", "second.mp4") for i in range(len(shots))]
    assert [r["filtered_by"] for r in rows[: len(shots)]] == \
        [None if (s.end_frame - s.start_frame + 1) / 24 >= 1.6 else ["keep:min_duration_s"] for s in shots]
    for name in ("many", "killed"):
        assert comparable(results[name][0]) == comparable(rows), name
    assert len({r["stats"]["pid"] for r in results["many"][0]}) == 2
    assert results["killed"][1]["stages"]["stats"]["worker_restarts"] == 1
    assert results["killed"][1]["stages"]["stats"]["items"] == summary["stages"]["stats"]["items"] == len(rows)


def test_bad_inputs_are_reported_and_the_rest_processed(sample, tmp_path: Path) -> None:
    video, shots = sample
    corrupt = tmp_path / "corrupt.mp4"
    corrupt.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"garbage" * 100)
    config, out = write_pipeline(tmp_path, "bad", [tmp_path / "missing.mp4", corrupt, video])
    result = run(config)
    assert result.returncode == 1
    rows, summary = outputs(out)
    assert len([r for r in rows if r["clip_index"] is not None]) == len(shots)
    (unreadable,) = [r for r in rows if r["clip_index"] is None]  # the missing path names no file: no row
    assert unreadable["video"] == str(corrupt) and "not a readable video" in unreadable["errors"][0]["reason"]
    reasons = {Path(f["video"]).name: f["reason"] for f in summary["failures"]}
    assert "no such file" in reasons["missing.mp4"]
    assert "corrupt.mp4: not a readable video" in reasons["corrupt.mp4"]
    assert all(f["clip_index"] is None and f["stage"] is None for f in summary["failures"])
    assert summary["videos"] == 2 and summary["videos_done"] == 1
    # named before any worker started, as readable lines
    assert result.stderr.index(f"warning: skipped {corrupt}: not a readable video") < result.stderr.index("[stats/0]")
    assert f"failed: no such file, folder or glob match: {tmp_path / 'missing.mp4'}" in result.stderr
    assert "{'video'" not in result.stderr


def test_frame_size_the_model_rejects_fails_that_video(sample, tmp_path: Path) -> None:
    video, _ = sample
    config, out = write_pipeline(tmp_path, "size", [video], size="[64, 64]")
    result = run(config)
    assert result.returncode == 1
    _, summary = outputs(out)
    assert "frames must have shape (N, 27, 48, 3), got (250, 64, 64, 3)" in summary["failures"][0]["reason"]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("controlled_model.ControlledModel", "controlled_model.Nope", "stage 'stats': model 'controlled_model.Nope'"),
        ("env: ocr", "env: nowhere", "stage 'stats' (env 'nowhere'): unknown env 'nowhere'"),
        ("min_duration_s", "min_duration",
         "stage 'keep': unknown field 'filter.min_duration' (did you mean 'filter.min_duration_s'?)"),
    ],
)
def test_config_errors_are_one_line(sample, tmp_path: Path, old: str, new: str, message: str) -> None:
    config, out = write_pipeline(tmp_path, "typo", [sample[0]])
    config.write_text(config.read_text().replace(old, new))
    result = run(config)
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not out.exists()  # no .parts, .tmp or empty metadata.jsonl left behind


def test_unwritable_output_directory(sample, tmp_path: Path) -> None:
    config, _ = write_pipeline(tmp_path, "ro", [sample[0]])
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run(config, "--output", str(blocker / "out"))
    assert result.returncode == 2
    assert "is not writable" in result.stderr and "--output" in result.stderr


@pytest.mark.parametrize(("sig", "when"), [(signal.SIGINT, "loading"), (signal.SIGTERM, "loading"),
                                         (signal.SIGINT, "ready")])
def test_interrupt_stops_every_worker_and_keeps_the_summary(sample, tmp_path: Path, sig: int, when: str) -> None:
    config, out = write_pipeline(tmp_path, "stop", [sample[0]], replicas=2)
    proc = start(config)
    parent = psutil.Process(proc.pid)
    deadline = time.monotonic() + 120
    while len(workers_of(parent)) < 6 and time.monotonic() < deadline:
        time.sleep(0.05)  # waits for the observable state "all six workers are running"
    workers = workers_of(parent)
    assert len(workers) == 6  # the split stage's, two of the clip stage's, and the decode, cut and encode steps'
    if when == "ready":  # both replicas of the clip stage report their setup (the split model may still load)
        setups = 0
        for line in proc.stderr:
            setups += "setup in" in line
            if setups == 2:
                break
    proc.send_signal(sig)
    proc.wait(timeout=5)  # a clean stop takes at most the workers' grace periods
    _, stderr = proc.communicate()
    assert proc.returncode == 130, stderr[-2000:]
    assert not [w for w in workers if w.is_running() and w.status() != psutil.STATUS_ZOMBIE]
    assert "interrupted" in json.loads((out / "run.json").read_text())["failures"][-1]["reason"]
