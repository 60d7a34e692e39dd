"""Reading a model's env from its source: literals found, anything computed left to a child process."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from orchestrator.model_source import locate_source, static_env_name

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL_STYLE = ROOT / "tests" / "fixtures" / "tutorial_style" / "radio_like.py"
BASE = """\
import torch
from models import model_utils

ENV = "video_splitting"

class Base(model_utils.ModelInterface):
{body}

class Child(Base):
    batched = True
"""


@pytest.mark.parametrize(
    ("body", "env"),
    [
        ("    @property\n    def conda_env_name(self) -> str:\n        return 'ocr'", "ocr"),
        ("    @property\n    def conda_env_name(self):\n        '''Why ocr.'''\n        return \"ocr\"", "ocr"),
        ("    conda_env_name = 'ocr'", "ocr"),
        ("    conda_env_name: str = 'ocr'", "ocr"),
        ("    conda_env_name = property(lambda self: 'ocr')", "ocr"),
        ("    @property\n    def conda_env_name(self):\n        return ENV", "video_splitting"),
        ("    @property\n    def conda_env_name(self):\n        return self.env", None),
        (("    @property\n    def conda_env_name(self):\n        if self.gpu:\n            return 'a'\n"
          "        return 'b'"), None),
        ("    conda_env_name = property(lambda self: self.env)", None),
        ("    pass", None),
    ],
)
def test_literals_are_read_on_the_class_and_through_a_base_in_the_same_file(tmp_path: Path, body: str,
                                                                           env: str | None) -> None:
    (tmp_path / "mod.py").write_text(BASE.format(body=body))
    assert static_env_name(f"{tmp_path / 'mod.py'}:Base") == env
    assert static_env_name("mod.Child", [tmp_path]) == env
    assert "mod" not in sys.modules


def test_the_class_own_definition_wins_over_its_base(tmp_path: Path) -> None:
    (tmp_path / "mod.py").write_text(BASE.format(body="    conda_env_name = 'ocr'") +
                                     "\nclass Computed(Base):\n    conda_env_name = property(lambda self: self.e)\n")
    assert static_env_name("mod.Computed", [tmp_path]) is None


def test_packages_and_the_projects_own_models_are_found_without_importing_them(tmp_path: Path) -> None:
    (tmp_path / "pkg" / "sub").mkdir(parents=True)
    (tmp_path / "pkg" / "__init__.py").write_text("raise RuntimeError('never imported')\n")
    (tmp_path / "pkg" / "sub" / "__init__.py").write_text("")
    (tmp_path / "pkg" / "sub" / "mod.py").write_text(BASE.format(body="    conda_env_name = 'ocr'"))
    assert locate_source("pkg.sub.mod.Child", [tmp_path]) == (tmp_path / "pkg" / "sub" / "mod.py", "Child")
    assert static_env_name("pkg.sub.mod.Child", [tmp_path]) == "ocr"
    assert "pkg" not in sys.modules
    assert static_env_name("models.transnetv2.TransNetV2ShotDetector") == "video_splitting"
    assert static_env_name(f"{TUTORIAL_STYLE}:BatchedRadioLike") == "video_splitting"


@pytest.mark.parametrize("class_path", ["nowhere.Model", "Model", "pkg.missing.Model", "/no/such/file.py:Model",
                                        "broken.Model", "mod.Missing"])
def test_what_cannot_be_read_gives_none(tmp_path: Path, class_path: str) -> None:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    (tmp_path / "broken.py").write_text("class Model(:\n")
    (tmp_path / "mod.py").write_text(BASE.format(body="    conda_env_name = 'ocr'"))
    assert static_env_name(class_path, [tmp_path]) is None
