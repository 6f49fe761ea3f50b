"""environment.yml (conda) and pyproject.toml (pip) install the same packages."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def requirement(text: str) -> tuple[str, str]:
    """``("name", "spec")`` with the name normalised (PEP 503) and extras dropped: ``dask[array]>=1`` ->
    ``("dask", ">=1")``."""
    match = re.fullmatch(r"\s*([A-Za-z0-9_.-]+)(\[[^\]]*\])?\s*(.*)", text)
    return re.sub(r"[-_.]+", "-", match.group(1)).lower(), match.group(3).replace(" ", "")


def test_environment_yml_lists_the_dependencies_and_test_extras_of_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pip_side = dict(map(requirement, project["dependencies"] + project["optional-dependencies"]["test"]))
    conda = yaml.safe_load((ROOT / "environment.yml").read_text())["dependencies"]
    entries = [e for item in conda for e in (item["pip"] if isinstance(item, dict) else [item])]
    conda_side = dict(requirement(e) for e in entries if e != "pip" and not e.startswith(("-e", "python=")))
    assert conda_side == pip_side


def test_the_notebook_extra_installs_jupyterlab():
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert {requirement(r)[0] for r in extras["notebook"]} >= {"jupyterlab", "ipywidgets"}
    assert "cf-xarray" in {requirement(r)[0] for r in extras["test"]}
