"""`replicas: auto` in real runs: a slow clip stage grows while cores are free, and stays at one replica,
saying why, when they are not."""

from __future__ import annotations

import shutil
from pathlib import Path

from tests.orchestrator.pipeline.runs import FIXTURES, outputs, run

PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: models.transnetv2.TransNetV2ShotDetector, frames: {{size: [48, 27]}}}}
  - name: slow
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats, delay_s: {delay_s}}}
    replicas: auto
    max_replicas: 3
    frames: {{sampling: one_per_clip}}
"""
DELAY_S = 3.0
"""A clip (about 43 frames of the sample) takes the slow stage 3 s: 14 input frames/s a replica, where the
split stage keeps up with about 25 on one busy core, so the slow stage is the slowest until it has two."""


def slow_pipeline(tmp_path: Path, name: str, video: Path, copies: int) -> tuple[Path, Path]:
    inputs = []
    for i in range(copies):
        inputs.append(tmp_path / f"{name}-{i}.mp4")
        shutil.copy(video, inputs[-1])
    shutil.copy(FIXTURES / "controlled_model.py", tmp_path / "controlled_model.py")
    config, out = tmp_path / f"{name}.yaml", tmp_path / f"out-{name}"
    config.write_text(PIPELINE.format(inputs=", ".join(map(str, inputs)), output=out, delay_s=DELAY_S))
    return config, out


def test_a_slow_stage_grows_while_cores_are_free(sample, tmp_path: Path) -> None:
    video, shots = sample
    config, out = slow_pipeline(tmp_path, "grow", video, copies=3)
    # 1 thread per replica: room for shots, the three media steps (decode, cut, encode) and 3 slow
    result = run(config, environ={"ORCHESTRATOR_CPUS": "7"})
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert len(rows) == 3 * len(shots) and all(r["slow"]["n"] == 1 for r in rows)
    assert summary["stages"]["shots"]["replicas"] == 1
    assert summary["stages"]["slow"]["replicas"] >= 2
    assert len({r["slow"]["pid"] for r in rows}) == summary["stages"]["slow"]["replicas"]
    grown = [d for d in summary["autoscale"] if d["grow"]]
    assert [d["grow"] for d in grown] == ["slow"] * (summary["stages"]["slow"]["replicas"] - 1)
    first = grown[0]
    assert first["reason"].startswith("slow is the slowest stage with work waiting (input frames/s: ")
    assert first["reason"].endswith("replica 2 of at most 3")
    measured = first["stages"]["slow"]
    assert measured["replicas"] == 2 and 0.5 / DELAY_S < measured["items_per_s_per_replica"] <= 1 / DELAY_S
    assert measured["waiting"] > 0


def test_a_slow_stage_without_free_cores_keeps_one_replica_and_says_why(sample, tmp_path: Path) -> None:
    video, shots = sample
    config, out = slow_pipeline(tmp_path, "held", video, copies=2)
    result = run(config, environ={"ORCHESTRATOR_CPUS": "5"})  # shots, 3 media steps and one slow take all
    assert result.returncode == 0, result.stderr[-3000:]
    rows, summary = outputs(out)
    assert len(rows) == 2 * len(shots)
    assert summary["stages"]["slow"]["replicas"] == 1
    held = [d for d in summary["autoscale"] if d["held"] == "slow: cores"]
    assert held and not [d for d in summary["autoscale"] if d["grow"]]
    assert "another replica's 1 thread(s) do not fit: 5 of 5 cores are taken" in held[0]["reason"]
