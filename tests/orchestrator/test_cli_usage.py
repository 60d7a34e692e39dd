"""The command line as a user meets it, through a real `python -m orchestrator.cli` process: a slip on the
command line gets its usage line and one error line with exit code 2, help and version exit 0, and nothing
ever prints a traceback."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from orchestrator.cli import app

ROOT = Path(__file__).resolve().parents[2]


def orchestrator(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "orchestrator.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def command_paths() -> list[tuple[str, ...]]:
    """Every command and command group the CLI has, as the words that name it (the root is ())."""
    def walk(command: object, path: tuple[str, ...]) -> list[tuple[str, ...]]:
        children = getattr(command, "commands", {})
        return [path] + [p for name, child in children.items() for p in walk(child, (*path, name))]
    return walk(typer.main.get_command(app), ())


@pytest.mark.parametrize(
    ("args", "command", "message"),
    [
        (["run"], "orchestrator run", "Missing argument 'config'."),
        (["run", "x.yaml", "--bogus"], "orchestrator run", "No such option: --bogus"),
        (["run", "x.yaml", "--gpus", "abc"], "orchestrator run", "Invalid value for '--gpus'"),
        (["run", "x.yaml", "--executor", "nope"], "orchestrator run", "Invalid value for '--executor'"),
        (["run", "a.yaml", "b.yaml"], "orchestrator run", "Got unexpected extra argument"),
        (["bogus"], "orchestrator", "No such command 'bogus'."),
        (["-x"], "orchestrator", "No such option: -x"),
        (["envs", "build", "--bogus"], "orchestrator envs build", "No such option: --bogus"),
        (["models", "download", "--bogus"], "orchestrator models download", "No such option: --bogus"),
    ],
)
def test_a_usage_error_is_one_line_naming_the_commands_help_with_exit_code_2(args: list[str], command: str,
                                                                              message: str) -> None:
    done = orchestrator(*args)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert len(lines) == 1 and done.stdout == "", done.stderr
    assert lines[0].startswith(f"error: {message}") and lines[0].endswith(f"(see `{command} -h`)"), lines[0]


def test_a_bad_config_path_is_one_error_line_with_exit_code_2(tmp_path: Path) -> None:
    done = orchestrator("run", str(tmp_path / "nope.yaml"))
    assert done.returncode == 2
    missing = tmp_path / "nope.yaml"
    assert done.stderr.splitlines() == [f"error: {missing}: cannot read the config (No such file or directory)"]


@pytest.mark.parametrize("path", command_paths(), ids=lambda path: " ".join(path) or "orchestrator")
def test_every_command_answers_h_with_its_help(path: tuple[str, ...]) -> None:
    done = orchestrator(*path, "-h")
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert " ".join(("Usage: orchestrator", *path)) in done.stdout


def test_h_is_help() -> None:
    assert orchestrator("run", "-h").stdout == orchestrator("run", "--help").stdout


@pytest.mark.parametrize("group", [(), ("envs",), ("models",)], ids=["orchestrator", "envs", "models"])
def test_a_group_given_no_command_shows_its_help_with_exit_code_2(group: tuple[str, ...]) -> None:
    done = orchestrator(*group)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr + done.stdout
    assert " ".join(("Usage: orchestrator", *group)) in done.stdout and "Commands" in done.stdout


def test_version_prints_the_projects_version() -> None:
    declared = re.search(r'^version = "(.+)"$', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)[1]
    done = orchestrator("--version")
    assert (done.returncode, done.stdout, done.stderr) == (0, f"orchestrator {declared}\n", "")


def test_a_config_with_several_problems_lists_each_on_a_line_with_exit_code_2(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("inputs: [a.mp4]\noutput: out\nstages:\n"
                      "  - {name: shots, split: models.transnetv2.TransNetV2ShotDetector, frame: {}}\n"
                      "  - {name: ocr, model: models.rapidocr.RapidOCRTextReader, replica: 2}\n")
    done = orchestrator("run", str(config))
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"error: {config}: 2 problems",
        "  line 4: stage 'shots': unknown field 'frame' (did you mean 'frames'?)",
        "  line 5: stage 'ocr': unknown field 'replica' (did you mean 'replicas'?)",
    ]
