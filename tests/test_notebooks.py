"""The example notebooks run headless, opened from examples/ or from the repository root."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def execute(name: str, cwd: Path, env: dict, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    for key, value in env.items():
        monkeypatch.setenv(key, str(value))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(ROOT / "examples" / f"{name}.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(cwd)}}).execute()
    return "\n".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("where", ["examples", "root"])
def test_crps_notebook_finds_its_inputs_from_where_it_is_opened(where, tmp_path, monkeypatch):
    for key in ("FORECAST_STORE", "FORECAST_TRUTH"):
        monkeypatch.delenv(key, raising=False)
    cwd = ROOT / "examples" if where == "examples" else ROOT
    text = execute("crps_vs_lead", cwd, {"FORECAST_PLOT": tmp_path / "crps.png"}, monkeypatch)
    demo = ROOT / "demo-output" / "ensemble.zarr"
    assert (f"store: {demo}" in text) if (demo / "zarr.json").is_file() else ("scoring a synthetic one" in text), text
    assert (tmp_path / "crps.png").stat().st_size > 1000


def test_python_api_notebook_runs_the_tiny_world(tiny_world, tmp_path, monkeypatch):
    workdir = tmp_path / "tiny"
    shutil.copytree(tiny_world.paths.workdir, workdir, ignore=shutil.ignore_patterns("*.zarr", "nightly", "scores"))
    shutil.copytree(tiny_world.paths.resolve("nature"), workdir / "planet" / "nature.zarr")
    shutil.copytree(tiny_world.paths.resolve("analysis"), workdir / "planet" / "analysis.zarr")
    text = execute("python_api", ROOT / "examples", {"FORECAST_WORKDIR": workdir, "FORECAST_FIGURES": tmp_path / "fig"},
                   monkeypatch)
    assert f"workdir: {workdir}" in text and "subset written and read back equal" in text
    assert (workdir / "ensemble.zarr" / "zarr.json").is_file()
    for png in ("plume.png", "z500_map.png"):
        assert (tmp_path / "fig" / png).stat().st_size > 5000
