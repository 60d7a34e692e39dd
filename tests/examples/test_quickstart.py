"""The README's main job, end to end: real decode, three real models in three envs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_finds_the_true_shots_and_reads_the_text(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), str(tmp_path)],
                            cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = [json.loads(line) for line in (tmp_path / "metadata.jsonl").read_text().splitlines()]
    truth = json.loads((ROOT / "examples" / "sample" / "sample.truth.json").read_text())["shots"]
    assert len(rows) == len(truth)
    for row, shot in zip(rows, truth, strict=True):
        assert abs(row["start_frame"] - shot["start_frame"]) <= 1 and abs(row["end_frame"] - shot["end_frame"]) <= 1
        expected = (shot["text"] or "").replace(" ", "")
        assert row["ocr"].replace(" ", "") == expected
        assert 0.0 <= row["unsafe_score"] < 0.5
