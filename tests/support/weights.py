"""Small weights repos and models that only declare weights, for the weights tests."""

from __future__ import annotations

from pathlib import Path

from models.model_interface import ModelInterface

FILES = {"config.json": b'{"hidden": 8}', "model.safetensors": bytes(range(256)) * 400, "README.md": b"# tiny\n",
         "sub/tokenizer.json": b'{"vocab": []}'}
"""A small weights repo: a big file, a nested file, and files a model's id_file_mapping may leave out."""


class RecordingReporter:
    """Remembers what a transfer did; raises KeyboardInterrupt after `interrupt_after` finished files."""

    def __init__(self, interrupt_after: int | None = None) -> None:
        self.started_files: list[str] = []
        self.finished_files: list[str] = []
        self.kept_files: list[str] = []
        self.interrupt_after = interrupt_after

    def started(self, path: str, size: int | None) -> None:
        self.started_files.append(path)

    def advanced(self, path: str, n_bytes: int) -> None:
        pass

    def finished(self, path: str) -> None:
        self.finished_files.append(path)
        if self.interrupt_after is not None and len(self.finished_files) >= self.interrupt_after:
            raise KeyboardInterrupt

    def kept(self, path: str) -> None:
        self.kept_files.append(path)


class NeedsWeights(ModelInterface):
    """A model that only declares what it needs (never set up in these tests)."""

    def __init__(self, names: list[str], mapping: dict[str, list[str] | None] | None = None) -> None:
        self.names, self.mapping = names, mapping

    @property
    def conda_env_name(self) -> str:
        return "video_splitting"

    @property
    def weights_names(self) -> list[str]:
        return self.names

    @property
    def id_file_mapping(self) -> dict[str, list[str] | None]:
        return self.mapping if self.mapping is not None else super().id_file_mapping

    def setup(self) -> None:
        raise AssertionError("never set up in the parent")

    def __call__(self, batch: object) -> object:
        raise AssertionError("never called in the parent")


def write_repo(root: Path, name: str, files: dict[str, bytes] = FILES) -> Path:
    """A folder laid out like the cache (`<root>/<org>/<repo>/...`), without a manifest."""
    for path, data in files.items():
        (root / name / path).parent.mkdir(parents=True, exist_ok=True)
        (root / name / path).write_bytes(data)
    return root / name
