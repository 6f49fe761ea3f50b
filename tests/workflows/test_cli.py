"""The command line as users run it: a fresh process per call."""

import os
import subprocess
import sys
from pathlib import Path

import xarray as xr

from workflows.config import bundled_config

TINY = str(bundled_config("tiny"))


def forecast(*args, cwd=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "workflows.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def test_help_does_not_import_torch_or_dask():
    # what makes --help slow is importing the heavy libraries; their absence is what keeps it fast
    code = ("import sys; from workflows.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit as exit:\n    assert exit.code == 0\n"
            "print(sorted(m for m in ('torch', 'dask', 'xarray', 'zarr', 'matplotlib') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "demo" in result.stdout and result.stdout.strip().splitlines()[-1] == "[]"


def test_score_imports_neither_scipy_stats_nor_pyplot_before_the_report():
    # `forecast score` pays for its imports on every call: scipy.stats alone took 0.7 s (issue 17)
    code = ("import sys\nfrom workflows.cli import cmd_score\nfrom workflows.recipes import score_store\n"
            "from forecast.verify.scores import open_ensemble, score_ensemble\nfrom workflows.report import write_report\n"
            "from forecast.verify import paired_difference, rank_histogram_flatness\n"
            "print(sorted(m for m in ('torch', 'scipy.stats', 'matplotlib', 'distributed') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_demo_runs_end_to_end_on_the_tiny_world(tmp_path):
    result = forecast("demo", TINY, "--workdir", str(tmp_path / "w"))
    assert result.returncode == 0, result.stderr[-2000:]
    report = Path(result.stdout.strip().splitlines()[-1].removeprefix("report: "))
    assert report.is_file()
    text = report.read_text()
    assert "ensemble-mean RMSE" in text and "control" in text
    for png in ("crps_vs_lead.png", "spread_skill_vs_lead.png", "rank_histograms.png", "rmse_vs_lead.png"):
        assert (report.parent / png).stat().st_size > 1000
    scores = xr.open_dataset(report.parent / "scores.nc")
    assert {"crps", "spread_skill_ratio", "rank_histogram", "control_rmse"} <= set(scores.data_vars)
    # a second run finds everything done and changes nothing
    store = tmp_path / "w" / "ensemble.zarr"
    before = {p: p.stat().st_mtime_ns for p in store.rglob("c/*")}
    again = forecast("run", TINY, "--workdir", str(tmp_path / "w"))
    assert again.returncode == 0, again.stderr[-2000:]
    assert {p: p.stat().st_mtime_ns for p in store.rglob("c/*")} == before


def test_unknown_config_key_is_named_with_the_closest_valid_one(tmp_path):
    result = forecast("run", TINY, "ensemble.batchsize=4", "--workdir", str(tmp_path))
    assert result.returncode == 2
    assert "ensemble.batchsize" in result.stderr and "batch_size" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
