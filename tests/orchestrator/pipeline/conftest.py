"""The generated sample video, made once per session for every pipeline test."""

from __future__ import annotations

from pathlib import Path

import pytest

from orchestrator.sample_video import Shot, generate_sample


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Shot]]:
    path = tmp_path_factory.mktemp("media") / "sample.mp4"
    return path, generate_sample(path)
