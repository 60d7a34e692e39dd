"""Weights tests: a private cache per test, mirrors on disk, and a slow or dropped link to the S3 server."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from models.model_utils import WEIGHTS_DIR_VAR
from orchestrator.weights.cache import WeightsCache
from tests.support.s3_link import S3Link


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> WeightsCache:
    """An empty cache, also exported as ORCHESTRATOR_WEIGHTS_DIR for code that reads the default."""
    root = tmp_path / "weights"
    monkeypatch.setenv(WEIGHTS_DIR_VAR, str(root))
    return WeightsCache(root)


@pytest.fixture
def s3_link(s3_endpoint: str) -> Iterator[Callable[..., S3Link]]:
    """Make links to the session's S3 server; each is closed after the test."""
    links: list[S3Link] = []

    def make(**settings: float | int | None) -> S3Link:
        links.append(S3Link(s3_endpoint, **settings))  # type: ignore[arg-type]
        return links[-1]

    yield make
    for link in links:
        link.close()
