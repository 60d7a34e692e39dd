"""WebDataset shards of an output folder: exactly the kept clips, by frame size, cut by bytes, rewritten whole,
and never half-written (SIGKILL at seeded moments)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import av
import pytest

from orchestrator.atomic import atomic_write_text
from orchestrator.cli_shards import shards
from orchestrator.dataset.shards import MANIFEST, parse_size, write_shards
from orchestrator.errors import ConfigError, OutputFull
from orchestrator.pipeline.config import load_config
from orchestrator.pipeline.output.parts import Part
from orchestrator.pipeline.output.writer import OutputWriter
from tests.orchestrator.pipeline.media import write_shots
from tests.support.cli import run_cli
from tests.support.paths import FIXTURES, ROOT

SIZES = {"a": (64, 48), "b": (48, 64), "c": (64, 48)}
"""Per video: its clips' frame size (two groups)."""


def _row(video: str, index: int, **fields: object) -> dict:
    clip = f"{video}-0123abcd_{index:04d}"
    return {"video": f"/in/{video}.mp4", "clip_index": index, "start_frame": 0, "end_frame": 9, "start_s": 0.0,
            "end_s": 0.4, "path": f"clips/{clip}.mp4", "filtered_by": None, "stats": {"mean": 1.0 * index},
            "kept": fields.get("path", "") is not None, **fields}


def _write_part(out: Path, video: str, rows: list[dict]) -> None:
    part = Part(f"/in/{video}.mp4", f"{video}-0123abcd", "f" * 20, True, rows)
    atomic_write_text(out / ".parts" / f"{part.video_id}.json", json.dumps(part.to_json()))


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    """An output folder as a run leaves it: per video, kept clips, one filtered (no file), one a duplicate
    (file removed), and one whose file is there but whose row says it is not kept. Returns it and the kept ids."""
    out = tmp_path_factory.mktemp("shards") / "out"
    (out / "clips").mkdir(parents=True)
    (out / ".parts").mkdir()
    kept: set[str] = set()
    for video, size in SIZES.items():
        rows = []
        for index in range(4):
            rows.append(_row(video, index))
            write_shots(out / rows[-1]["path"], [(8 + 4 * index, (40 * index, 90, 200))], size)
            kept.add(Path(rows[-1]["path"]).stem)
        rows.append(_row(video, 4, path=None, filtered_by=["keep:min_duration_s"]))
        rows.append(_row(video, 5, path=None, kept=False, filtered_by=["dedup"], duplicate_of=f"{video}_0000"))
        rows.append(_row(video, 6, kept=False, filtered_by=["dedup"], duplicate_of=f"{video}_0001"))
        write_shots(out / rows[-1]["path"], [(8, (0, 0, 0))], size)
        _write_part(out, video, rows)
    return out, kept


def _members(tar_path: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(tar_path) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]  # type: ignore[union-attr]


def _frame_size(data: bytes, scratch: Path) -> tuple[int, int]:
    scratch.write_bytes(data)
    with av.open(str(scratch)) as container:
        return container.streams.video[0].width, container.streams.video[0].height


def check_shards(out: Path, kept: set[str], max_bytes: int, scratch: Path) -> list[str]:
    """Assert the shards hold each kept clip exactly once, as WebDataset reads them; the tars' paths."""
    root = out / "shards"
    manifest = json.loads((root / MANIFEST).read_text())
    tars = sorted(str(p.relative_to(root)) for p in root.glob("**/*.tar"))
    assert tars == sorted(s["path"] for s in manifest["shards"]), "a tar the manifest does not list"
    seen: list[str] = []
    for record in manifest["shards"]:
        path = root / record["path"]
        assert hashlib.sha256(path.read_bytes()).hexdigest() == record["sha256"]
        assert path.stat().st_size == record["bytes"]
        members = _members(path)
        keys = [name.split(".", 1)[0] for name, _ in members[::2]]
        assert [n for n, _ in members] == [f"{k}.{ext}" for k in keys for ext in ("mp4", "json")]
        assert keys == record["samples"]
        assert path.stat().st_size <= max_bytes or len(keys) == 1, f"{path} is over max_bytes with {len(keys)}"
        group = record["path"].split("/")[0]
        for (_, video), (_, row_bytes), key in zip(members[::2], members[1::2], keys, strict=True):
            row = json.loads(row_bytes)
            assert row["clip_id"] == key and video == (out / row["path"]).read_bytes()
            assert "x".join(map(str, _frame_size(video, scratch))) == group
        seen += keys
    assert sorted(seen) == sorted(kept), "shards must hold exactly the kept clips, each once"
    return tars


def test_shards_hold_exactly_the_kept_clips_grouped_by_size_under_max_bytes(folder, tmp_path):
    out, kept = folder
    sizes = sorted((out / "clips" / f"{k}.mp4").stat().st_size for k in kept)
    max_bytes = sizes[-1] + sizes[0] + 4096  # some tars of two or three clips, some of one
    manifest = write_shards(out, max_bytes)
    tars = check_shards(out, kept, max_bytes, tmp_path / "clip.mp4")
    assert {t.split("/")[0] for t in tars} == {"64x48", "48x64"}
    assert len(tars) > 2 and manifest.groups["64x48"]["samples"] == 8 and manifest.groups["48x64"]["aspect"] == 0.75

    one_each = write_shards(out, 1)  # every clip is over the limit: one tar each
    assert len(one_each.shards) == len(kept)
    check_shards(out, kept, 1, tmp_path / "clip.mp4")


def test_a_rewrite_drops_what_the_rows_no_longer_keep_and_leaves_no_stale_tar(folder, tmp_path):
    out, kept = folder
    write_shards(out, 1)
    before = {p: p.read_bytes() for p in (out / "shards").glob("**/*.tar")}
    part_file = out / ".parts" / "b-0123abcd.json"
    original = part_file.read_text()
    part = json.loads(original)
    part["rows"][2].update(kept=False, filtered_by=["dedup"], duplicate_of="b-0123abcd_0000")
    part_file.write_text(json.dumps(part))
    try:
        write_shards(out, 10**9)
        check_shards(out, kept - {"b-0123abcd_0002"}, 10**9, tmp_path / "clip.mp4")
        assert len(list((out / "shards").glob("**/*.tar"))) == 2, "one tar per group, the old ones removed"
    finally:
        part_file.write_text(original)
    write_shards(out, 1)
    assert {p: p.read_bytes() for p in (out / "shards").glob("**/*.tar")} == before, "the same rows, the same tars"


WRITER = """\
import sys
from pathlib import Path
from orchestrator.dataset.shards import write_shards
print("ready", flush=True)
sys.stdin.readline()
write_shards(Path(sys.argv[1]), int(sys.argv[2]))
print("done", flush=True)
"""


def _killed_write(out: Path, after_s: float | None) -> tuple[bool, float]:
    """Start writing shards of one clip each in a child process, SIGKILL it `after_s` later (None: let it
    finish); whether it was killed before it finished, and how long it ran from its start signal."""
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(out), "1"], cwd=ROOT, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        assert proc.stdout.readline() == "ready\n"  # type: ignore[union-attr]
        started = time.monotonic()
        proc.stdin.write("go\n")  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
        if after_s is not None:
            time.sleep(after_s)  # the fault's moment, not a synchronisation
            proc.send_signal(signal.SIGKILL)
        finished = proc.stdout.read() == "done\n"  # type: ignore[union-attr]
        return not finished, time.monotonic() - started
    finally:
        proc.wait(10)


def test_a_write_killed_at_random_moments_leaves_no_manifest_or_a_whole_one_and_a_rewrite_finishes(folder, tmp_path):
    out, kept = folder
    # the moments are drawn over a child's whole write, as timed here once warm (the first also fills caches)
    took = min(_killed_write(out, None)[1] for _ in range(2))
    interrupted = 0
    for seed in range(5):
        write_shards(out, 10**9)  # earlier shards, of another size, for the killed write to replace
        interrupted += _killed_write(out, random.Random(seed).uniform(0.0, 0.9 * took))[0]
        if (out / "shards" / MANIFEST).exists():
            manifest = json.loads((out / "shards" / MANIFEST).read_text())
            check_shards(out, kept, manifest["max_bytes"], tmp_path / "clip.mp4")
        write_shards(out, 1)
        check_shards(out, kept, 1, tmp_path / "clip.mp4")
        assert not list((out / "shards").glob("**/.*")), "a temp file was left behind"
    assert interrupted >= 1, "the kills must land while the shards are being written"


def test_the_cli_writes_shards_and_refuses_a_bad_size_in_one_line(folder, tmp_path):
    out, kept = folder
    done = run_cli("shards", str(out), "--max-bytes", "2MB")
    assert done.returncode == 0, done.stderr
    assert f"of {len(kept)} clips" in done.stdout
    check_shards(out, kept, 2 * 10**6, tmp_path / "clip.mp4")
    bad = run_cli("shards", str(out), "--max-bytes", "2XB")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "'2XB' is not a size" in bad.stderr
    with pytest.raises(ConfigError, match="no such output folder"):
        shards(str(tmp_path / "nowhere"), "1GB")
    for command in ("shards", "report"):  # they read clips as local files: a bucket folder is refused
        refused = run_cli(command, "s3://curated/run1/")
        assert refused.returncode == 2 and "Traceback" not in refused.stderr, refused.stderr
        assert f"orchestrator {command} reads a local output folder, and s3://curated/run1/ is in a bucket" \
            in refused.stderr


@pytest.mark.parametrize(("text", "size"), [("1GB", 10**9), ("2GiB", 2 * 2**30), ("500 mb", 5 * 10**8),
                                            (4096, 4096), ("1.5KB", 1500)])
def test_sizes_read_with_units(text, size):
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "1XB", "-3MB", 0, True, [1]])
def test_a_bad_size_is_refused(bad):
    with pytest.raises(ValueError, match="size"):
        parse_size(bad)


RUN_WITH_SHARDS = """\
inputs: [{inputs}]
output: {output}
shards: {{max_bytes: 40KB}}
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr}}, frames: {{size: [32, 24]}}}}
  - {{name: stats, model: controlled_model.ControlledModel, params: {{env: ocr, returns: frame_stats}},
     frames: {{sampling: one_per_clip}}}}
  - {{name: keep, filter: {{min_duration_s: 0.5}}}}
"""
RED, GREEN, BLUE = (200, 30, 30), (30, 200, 30), (30, 30, 200)


def test_a_run_whose_config_asks_for_shards_writes_them_after_its_last_video(tmp_path):
    shutil.copy(FIXTURES / "controlled_model.py", tmp_path)
    shutil.copy(FIXTURES / "colour_splitter.py", tmp_path)
    videos = [tmp_path / "wide.mp4", tmp_path / "tall.mp4"]
    write_shots(videos[0], [(24, RED), (6, GREEN), (30, BLUE)], (64, 48))  # the 6-frame shot is filtered
    write_shots(videos[1], [(20, GREEN), (28, RED)], (48, 64))
    config, out = tmp_path / "pipeline.yaml", tmp_path / "out"
    config.write_text(RUN_WITH_SHARDS.format(inputs=", ".join(map(str, videos)), output=out))
    done = run_cli("run", str(config), "--quiet")
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in (out / "metadata.jsonl").read_text().splitlines()]
    kept = {Path(r["path"]).stem for r in rows if r["path"]}
    assert len(kept) == 4 and len(rows) == 5
    tars = check_shards(out, kept, 40_000, tmp_path / "clip.mp4")
    assert {t.split("/")[0] for t in tars} == {"64x48", "48x64"}


def test_a_config_with_a_bad_shard_size_names_its_line_and_field(tmp_path):
    config = tmp_path / "pipeline.yaml"
    config.write_text("inputs: [a.mp4]\noutput: out\nshards: {max_bytes: 1XB}\nstages:\n"
                      "  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector}\n")
    with pytest.raises(ConfigError, match=r"line 3: field 'shards.max_bytes': '1XB' is not a size"):
        load_config(config)
    config.write_text(config.read_text().replace("1XB", "512MiB"))
    assert load_config(config)[0].shards.max_bytes == 512 * 2**20  # type: ignore[union-attr]


def test_fresh_sets_the_shards_aside_with_the_results_they_were_written_from(folder, tmp_path):
    out, _ = folder
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    write_shards(copy, 10**9)
    writer = OutputWriter(copy, {"stages": []}, [], fresh=True)
    assert not (copy / "shards").exists() and (writer.set_aside / "shards" / MANIFEST).is_file()  # type: ignore[operator]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real file system (tmpfs, 128 KiB) that holds the folder's clips and parts but not their shards too."""
    mount = tmp_path / "disk"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128k", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"mounting a small tmpfs needs root: {mounted.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_full_disk_stops_the_shards_with_one_line_and_leaves_no_manifest_nor_temp_file(folder, small_disk):
    out, _ = folder
    copy = small_disk / "out"
    shutil.copytree(out, copy, ignore=shutil.ignore_patterns("shards"))
    with pytest.raises(OutputFull, match=r"shards: no space left on device writing shards; free some space"):
        write_shards(copy, 1)
    assert (copy / "shards").is_dir() and not (copy / "shards" / MANIFEST).exists()
    assert not [p for p in (copy / "shards").glob("**/.*")], "a temp file was left behind"
