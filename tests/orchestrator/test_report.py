"""The HTML report of an output folder, from a real `orchestrator run` (tiny generated videos, the test models,
real workers), loaded in a real headless Chromium (Debian's package; scripts/setup.sh installs it)."""

from __future__ import annotations

import errno
import html
import json
import shutil
import subprocess
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from orchestrator.dataset.provenance import read_provenance
from orchestrator.pipeline.output.lock import OutputLock
from orchestrator.pipeline.stats import TIMELINE_SAMPLES, StageStats, Timeline
from orchestrator.report.thumbs import PREVIEW_FRAMES
from orchestrator.report.write import report_after_run
from tests.orchestrator.pipeline.media import write_shots
from tests.orchestrator.pipeline.runs import FIXTURES, copy_controlled_model, outputs, run
from tests.support.cli import run_cli

RED, GREEN, BLUE, YELLOW, CYAN = (200, 30, 30), (30, 200, 30), (30, 30, 200), (220, 220, 40), (40, 200, 200)
SHOTS = {"a.mp4": [(30, RED), (12, GREEN), (30, BLUE)], "b.mp4": [(36, YELLOW), (30, CYAN)]}
"""At 24 frames/s: the 0.5 s green shot is filtered (min_duration_s 1.0), the four others kept."""
PIPELINE = """\
inputs: [{inputs}]
output: {output}
stages:
  - {{name: shots, split: colour_splitter.ColourSplitter, params: {{env: ocr}}, frames: {{size: [32, 24]}}}}
  - name: stats
    model: controlled_model.ControlledModel
    params: {{env: ocr, returns: frame_stats}}
    frames: {{sampling: one_per_clip, size: [16, 12]}}
  - {{name: keep, filter: {{min_duration_s: 1.0}}}}
"""


class Dom(HTMLParser):
    """The elements of a page, as (tag, attributes)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str]]] = []
        self.texts: dict[str, list[str]] = {}
        self._section = ""
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, {k: v or "" for k, v in attrs}))
        if tag == "section":
            self._section = self.elements[-1][1].get("id", "")

    def handle_data(self, data: str) -> None:
        self.texts.setdefault(self._section, []).append(data)

    def text_of(self, section: str) -> str:
        return " ".join(self.texts.get(section, []))

    def having(self, tag: str, css_class: str) -> list[dict[str, str]]:
        return [a for t, a in self.elements if t == tag and css_class in a.get("class", "").split()]


def chromium(page: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Debian's chromium, headless, on `page` in a window tall enough that every lazy image loads."""
    browser = shutil.which("chromium")
    if browser is None:
        pytest.fail("chromium is not installed: run scripts/setup.sh as root (it installs Debian's package)")
    return subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                           "--window-size=1280,4000", *args, page.as_uri()],
                          capture_output=True, text=True, timeout=60, check=True)


def loaded_dom(page: Path) -> Dom:
    """The page's DOM once loaded (images that failed to load have run their error handler by then)."""
    return Dom(chromium(page, "--dump-dom").stdout)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The output folder of one real run over two tiny videos (its report written at the end)."""
    folder = tmp_path_factory.mktemp("report")
    for name, shots in SHOTS.items():
        write_shots(folder / name, shots)
    copy_controlled_model(folder)
    shutil.copy(FIXTURES / "colour_splitter.py", folder / "colour_splitter.py")
    (folder / "broken.mp4").write_bytes(b"not a video at all")  # a failure for the report to show
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=", ".join(str(folder / n) for n in [*SHOTS, "broken.mp4"]), output=out))
    result = run(config)
    assert result.returncode == 1 and "broken.mp4" in result.stderr, result.stderr
    assert f"report: {out / 'report.html'}" in result.stdout
    return out


def one_video_pipeline(folder: Path) -> tuple[Path, Path]:
    write_shots(folder / "a.mp4", SHOTS["a.mp4"])
    copy_controlled_model(folder)
    shutil.copy(FIXTURES / "colour_splitter.py", folder / "colour_splitter.py")
    config, out = folder / "pipeline.yaml", folder / "out"
    config.write_text(PIPELINE.format(inputs=folder / "a.mp4", output=out))
    return config, out


def test_a_run_whose_report_cannot_be_written_warns_and_succeeds_with_its_results(tmp_path: Path) -> None:
    config, out = one_video_pipeline(tmp_path)
    out.mkdir()
    (out / "report_files").write_text("a file where the report's images go")
    result = run(config)
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if "report" in line]
    assert warning.startswith("warning: the report was not written: cannot write the report")
    rows, summary = outputs(out)
    assert len(rows) == 3 and summary["kept"] == 2 and not (out / "report.html").exists()


def test_a_run_with_no_report_writes_none(tmp_path: Path) -> None:
    config, out = one_video_pipeline(tmp_path)
    result = run(config, "--no-report")
    assert result.returncode == 0, result.stderr
    assert (out / "metadata.jsonl").is_file() and "report:" not in result.stdout
    assert not (out / "report.html").exists() and not (out / "report_files").exists()


def kept_ids(out: Path) -> set[str]:
    rows, _ = outputs(out)
    return {Path(r["path"]).stem for r in rows if r["path"]}


def test_a_run_writes_a_report_showing_one_preview_per_kept_clip_in_headless_chromium(finished: Path,
                                                                                    tmp_path: Path) -> None:
    rows, _ = outputs(finished)
    dom = loaded_dom(finished / "report.html")
    previews = [img["data-clip"] for img in dom.having("img", "thumb")]
    assert sorted(previews) == sorted(kept_ids(finished)) and len(previews) == 4
    # the unreadable input's row (no clip) is shown among the failures, not as a filtered clip
    assert len(dom.having("figure", "filtered")) == sum(1 for r in rows if not r["path"]) - 1 == 1
    assert len(dom.having("figure", "chart")) == 2
    assert len(dom.having("tr", "failure")) == 1 and "broken.mp4" in dom.text_of("failures")
    screenshot = tmp_path / "report.png"
    chromium(finished / "report.html", f"--screenshot={screenshot}")
    with Image.open(screenshot) as shot:
        assert shot.size == (1280, 4000)
        assert len(shot.convert("RGB").getcolors(1 << 20) or ()) > 50  # a page with pictures, not a blank

    # a copy that lost one image: the browser marks that preview as missing, so the count above saw real images
    copy = tmp_path / "copy"
    shutil.copytree(finished, copy, ignore=shutil.ignore_patterns(".lock*"))
    lost = next(img["src"] for img in dom.having("img", "thumb"))
    (copy / lost).unlink()
    damaged = loaded_dom(copy / "report.html")
    assert len(damaged.having("img", "thumb")) == 3 and len(damaged.having("img", "missing")) == 1


def mean_colour(image: Image.Image) -> tuple[float, ...]:
    pixel = image.convert("RGB").resize((1, 1), Image.Resampling.BOX).getpixel((0, 0))
    return tuple(float(p) for p in pixel)


def near(colour: tuple[float, ...], expected: tuple[int, int, int]) -> bool:
    return max(abs(a - b) for a, b in zip(colour, expected, strict=True)) < 40


def test_previews_are_animated_clips_and_a_filtered_clip_shows_its_source_at_its_start(finished: Path) -> None:
    dom = Dom((finished / "report.html").read_text())
    rows, _ = outputs(finished)
    shown = {Path(r["path"]).stem: SHOTS[Path(r["video"]).name][r["clip_index"]][1] for r in rows if r["path"]}
    for img in dom.having("img", "thumb"):
        with Image.open(finished / img["src"]) as preview:
            assert preview.n_frames == PREVIEW_FRAMES
            assert near(mean_colour(preview), shown[img["data-clip"]]), img["data-clip"]
    (still,) = dom.having("img", "still")
    with Image.open(finished / still["src"]) as frame:
        assert frame.n_frames == 1 and near(mean_colour(frame), GREEN)


def test_run_json_holds_a_timeline_of_items_done_and_replicas_up(finished: Path) -> None:
    _, summary = outputs(finished)
    timeline = summary["timeline"]
    t = timeline["t"]
    assert len(t) >= 2 and all(b > a for a, b in zip(t, t[1:], strict=False))
    for name, stage in summary["stages"].items():
        done = timeline["done"][name]
        assert len(done) == len(t) and done == sorted(done) and done[-1] == stage["items"]
    assert max(timeline["replicas"]["stats"]) == 1 and timeline["replicas"]["stats"][-1] == 1
    assert set(timeline["replicas"]["keep"]) == {0}  # a filter has no replicas


def test_a_long_run_keeps_a_bounded_evenly_spaced_timeline_with_exact_totals() -> None:
    stats = {"split": StageStats("split", states=["ready", "ready"]), "clips": StageStats("clips")}
    timeline = Timeline()
    for second in range(20_000):
        stats["split"].done, stats["clips"].done = second, 3 * second
        timeline.sample(float(second), stats)
    timeline.sample(20_000.5, stats, force=True)
    assert TIMELINE_SAMPLES // 2 <= len(timeline.t) < TIMELINE_SAMPLES
    gaps = {round(b - a, 3) for a, b in zip(timeline.t[:-1], timeline.t[1:-1], strict=False)}
    assert gaps == {timeline.interval_s} and timeline.interval_s == 64.0
    assert timeline.done["clips"][-1] == 3 * 19_999 and timeline.done["split"][-1] == 19_999
    assert all(c == 3 * s for s, c in zip(timeline.done["split"], timeline.done["clips"], strict=True))
    assert set(timeline.replicas["split"]) == {2} and set(timeline.replicas["clips"]) == {0}


def test_duplicate_groups_and_provenance_are_shown_from_the_rows(finished: Path, tmp_path: Path) -> None:
    """Rows as the dedup stage marks them: a duplicate in its group, linked from the clip it duplicates; and the
    provenance record the run wrote, with how many rows use it."""
    out = tmp_path / "out"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns(".lock*", "report.html", "report_files"))
    rows, _ = outputs(out)
    kept = [r for r in rows if r["path"]]
    original, duplicate = Path(kept[0]["path"]).stem, kept[-1]
    duplicate.update(kept=False, path=None, filtered_by=["dedup"], duplicate_of=original)
    (out / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (record_id, record), = read_provenance(out).items()
    assert {r["provenance"] for r in rows} == {record_id}
    result = run_cli("report", str(out))
    assert result.returncode == 0, result.stderr
    dom = loaded_dom(out / "report.html")
    assert duplicate["clip_id"] not in [img["data-clip"] for img in dom.having("img", "thumb")]
    assert len(dom.having("img", "thumb")) == 3 and len(dom.having("img", "still")) == 2
    assert [a for t, a in dom.elements if t == "h3" and a.get("id") == f"dup-{original}"]
    assert [a["href"] for a in dom.having("a", "badge")] == [f"#dup-{original}"]
    page = (out / "report.html").read_text()
    assert record.stages["stats"].lock and record.stages["stats"].lock in page
    assert html.escape(json.dumps(dict(record.stages["stats"].params), sort_keys=True)) in page
    assert f'<td class="n">{len(rows)}</td><td>stats</td>' in page  # every row refers to the one record


@pytest.fixture
def full_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 1 MiB tmpfs, mounted for the test."""
    mount = tmp_path / "disk"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def fill(folder: Path, leave: int) -> None:
    """Fill the file system of `folder`, but for about `leave` bytes."""
    with open(folder / "filler", "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        handle.truncate(max(handle.tell() - leave, 0))


def test_a_report_that_fills_the_disk_is_one_line_or_a_warning_and_leaves_the_folder_as_it_was(
        finished: Path, full_disk: Path) -> None:
    out = full_disk / "out"
    shutil.copytree(finished, out, ignore=shutil.ignore_patterns(".lock*", "report.html", "report_files"))
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    fill(full_disk, leave=12 << 10)  # room for an image or two, not for the report
    result = run_cli("report", str(out))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "No space left on device" in result.stderr and len(result.stderr.strip().splitlines()) == 1
    warnings: list[str] = []
    assert report_after_run(out, warnings.append) is None
    assert len(warnings) == 1 and "orchestrator report" in warnings[0]
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file() and not p.name.startswith(".lock")} == {
        p: data for p, data in before.items() if not p.name.startswith(".lock")}


def test_report_names_what_is_wrong_with_its_folder_in_one_line(finished: Path, tmp_path: Path) -> None:
    empty = run_cli("report", str(tmp_path))
    assert empty.returncode == 2 and "holds no metadata.jsonl" in empty.stderr
    assert not list(tmp_path.iterdir())  # a folder that is not an output folder is left alone
    lock = OutputLock(finished)
    lock.acquire()
    try:
        busy = run_cli("report", str(finished))
    finally:
        lock.release()
    assert busy.returncode == 2 and "in use by a run" in busy.stderr
    assert len(empty.stderr.strip().splitlines()) == len(busy.stderr.strip().splitlines()) == 1
