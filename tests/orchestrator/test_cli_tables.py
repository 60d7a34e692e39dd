"""CLI tables in an 80-column terminal: names stay whole, paths give way."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from orchestrator.cli_envs import envs_table
from orchestrator.envs.registry import EnvStatus
from orchestrator.render import ShortPath, home_relative, middle_ellipsis

CACHE = Path.home() / ".cache" / "orchestrator" / "envs"
ROWS = [
    EnvStatus("content_filter", "uv", "3.12", "35257021598ee8d1", True, str(CACHE / "content_filter-35257021598ee8d1"),
              306_000_000),
    EnvStatus("video_splitting", "existing", "3.11", None, True, "/opt/conda/envs/video_splitting_cuda12_torch25",
              None),
    EnvStatus("ocr", "conda", "3.11", None, False, None, None,
              "conda-lock.yml no longer matches envs/ocr/environment.yml: run `orchestrator envs lock ocr`"),
]


def _render(width: int) -> list[str]:
    console = Console(width=width, record=True, color_system=None)
    console.print(envs_table(ROWS, CACHE))
    return console.export_text().splitlines()


def test_env_names_stay_whole_in_80_columns_and_paths_shrink_in_the_middle() -> None:
    lines = _render(80)
    assert max(len(line) for line in lines) <= 80
    cells = {line.split("│")[1].strip(): line.split("│")[6].strip() for line in lines if line.startswith("│ ")}
    assert list(cells) == ["content_filter", "video_splitting", "ocr"]
    cached, existing = cells["content_filter"], cells["video_splitting"]
    assert "…" in cached and cached.startswith("content") and cached.endswith("8ee8d1")
    assert "…" in existing and existing.startswith("/opt/") and existing.endswith("torch25")
    assert cells["ocr"] == "not built"
    assert "env cache: ~/.cache/orchestrator/envs" in "\n".join(lines)
    assert " ".join(line.strip() for line in lines[-2:]) == (
        "ocr: conda-lock.yml no longer matches envs/ocr/environment.yml: run `orchestrator envs lock ocr`")


def test_a_wide_terminal_shows_whole_paths_and_the_short_lock_hash() -> None:
    text = "\n".join(_render(200))
    assert "content_filter-35257021598ee8d1 " in text and "/opt/conda/envs/video_splitting_cuda12_torch25 " in text
    assert "│ 35257021 │" in text and "35257021598ee8d1 │" not in text


def test_path_shortening() -> None:
    assert middle_ellipsis("/opt/conda/envs/video", 9) == "/opt…ideo" and len(middle_ellipsis("x" * 40, 12)) == 12
    assert middle_ellipsis("short", 9) == "short" and middle_ellipsis("abc", 1) == "…"
    assert home_relative(str(Path.home() / "envs")) == "~/envs" and home_relative("/opt/x") == "/opt/x"
    assert home_relative(str(Path.home()) + "-other/x") == str(Path.home()) + "-other/x"
    assert ShortPath(str(Path.home() / "a")).text == "~/a"
