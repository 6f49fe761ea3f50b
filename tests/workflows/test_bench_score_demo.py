"""bench/score_demo.py's comparison of two scores.nc, on two tiny files written here."""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

BENCH = Path(__file__).resolve().parents[2] / "bench" / "score_demo.py"


@pytest.fixture(scope="module")
def score_demo():
    spec = importlib.util.spec_from_file_location("score_demo", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def scores_file(path, crps, extra=None, attrs=None):
    lead = np.array([0, 6, 12], dtype="timedelta64[h]").astype("timedelta64[ns]")
    ds = xr.Dataset({"crps": (("channel", "lead_time"), np.asarray(crps, dtype=float)),
                     "spread": (("channel", "lead_time"), np.ones((2, 3)))},
                    coords={"channel": ["z500", "t2m"], "lead_time": lead}, attrs=attrs or {})
    if extra:
        ds[extra] = ds["spread"] * 2
    ds.to_netcdf(path)
    return path


def test_comparison_gives_largest_absolute_and_relative_differences_and_lists_the_rest(tmp_path, score_demo):
    old = scores_file(tmp_path / "old.nc", [[1.0, 2.0, 4.0], [0.0, 1.0, np.nan]], extra="only_old", attrs={"a": 1})
    new = scores_file(tmp_path / "new.nc", [[1.0, 2.5, 4.0], [0.25, 1.0, 3.0]], extra="only_new",
                      attrs={"a": 2, "b": 0})
    result = score_demo.compare_scores(new, old)
    # crps: |2.5 - 2| = 0.5 and 0.25 (old 0: no relative value) -> max abs 0.5, max rel 0.5 / 2; one NaN only in old
    assert result["variables"]["crps"] == (0.5, 0.25, 1)
    assert result["variables"]["spread"] == (0.0, 0.0, 0)
    assert result["only_new"] == ["only_new"] and result["only_old"] == ["only_old"]
    assert result["attrs_only_new"] == ["b"] and result["attrs_differ"] == ["a"] and result["attrs_only_old"] == []


def test_comparison_names_a_variable_whose_shape_differs(tmp_path, score_demo):
    old = scores_file(tmp_path / "old.nc", np.zeros((2, 3)))
    new = xr.open_dataset(scores_file(tmp_path / "n.nc", np.zeros((2, 3)))).load().isel(lead_time=[0, 1])
    new.to_netcdf(tmp_path / "new.nc")
    result = score_demo.compare_scores(tmp_path / "new.nc", old)
    assert "crps" not in result["variables"] and any(m.startswith("crps:") for m in result["mismatched"])


def test_without_a_baseline_it_says_how_to_make_one_and_exits_2(score_demo, capsys):
    assert score_demo.main(["store.zarr", "--truth", "truth.zarr"]) == 2
    assert "git worktree add" in capsys.readouterr().err
