"""Laziness, Dask and layout independence, bounded memory, regions, bad input, and scoring stores."""

import os
import tracemalloc
from pathlib import Path

import dask
import numpy as np
import pytest
import xarray as xr

from forecast import verify
from forecast.verify import _kernels

ROOT = Path(__file__).resolve().parents[2]


def field(m=6, seed=0):
    """float32 ensemble ``(member, init_time, lat, lon)`` (store order) and truth, with NaNs."""
    rng = np.random.default_rng(seed)
    lat = np.linspace(80, -80, 9)
    lon = np.arange(0, 360, 30.0)
    f = rng.normal(size=(m, 3, lat.size, lon.size)).astype(np.float32)
    y = rng.normal(size=(3, lat.size, lon.size)).astype(np.float32)
    y[0, 0, :3] = np.nan
    f[1, 1, 2, 2] = np.nan
    coords = {"lat": lat, "lon": lon}
    return (xr.DataArray(f, dims=("member", "init_time", "lat", "lon"), coords=coords),
            xr.DataArray(y, dims=("init_time", "lat", "lon"), coords=coords))


DIMS = ["init_time", "lat", "lon"]
CLIM = xr.DataArray(np.linspace(-2.5, 2.5, 11), dims="quantile", coords={"quantile": np.linspace(0, 1, 11)})
METRICS = {
    "crps": lambda f, y: verify.crps(f, y, dim=DIMS, regions=verify.REGIONS),
    "crps_standard": lambda f, y: verify.crps(f, y, fair=False),
    "crps_skill_score": lambda f, y: verify.crps_skill_score(f, y, f.isel(init_time=0, drop=True), dim=DIMS),
    "twcrps": lambda f, y: verify.twcrps(f, y, 0.5, dim=DIMS),
    "ensemble_mean_rmse": lambda f, y: verify.ensemble_mean_rmse(f, y, dim=DIMS, regions=verify.REGIONS),
    "ensemble_spread": lambda f, y: verify.ensemble_spread(f, dim=DIMS),
    "spread_skill_ratio": lambda f, y: verify.spread_skill_ratio(f, y, dim=DIMS),
    "rank_histogram": lambda f, y: verify.rank_histogram(f, y, dim=DIMS, regions=verify.REGIONS),
    "outlier_fraction": lambda f, y: verify.outlier_fraction(f, y, dim=DIMS),
    "exceedance_probability": lambda f, y: verify.exceedance_probability(f, 0.5, dim=DIMS),
    "brier_score": lambda f, y: verify.brier_score(f, y, 0.5, fair=True, dim=DIMS),
    "reliability": lambda f, y: verify.reliability(f, y, 0.0, dim=DIMS)["observed_frequency"],
    "ensemble_quantiles": lambda f, y: verify.ensemble_quantiles(f, [0.1, 0.9]),
    "sigma_exceedance_counts": lambda f, y: verify.sigma_exceedance_counts(f, dim=DIMS),
    "best_member_rmse": lambda f, y: verify.best_member_rmse(f, y, dim=DIMS),
    "extreme_forecast_index": lambda f, y: verify.extreme_forecast_index(f, CLIM, dim=DIMS),
    "satisfactory_ensemble_size": lambda f, y: verify.satisfactory_ensemble_size(f, y, draws=20, dim=DIMS)["coverage"],
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_every_metric_is_lazy_and_equals_the_numpy_result(name):
    f, y = field()
    eager = METRICS[name](f, y)
    lazy_f = f.chunk({"member": 2, "init_time": 1, "lat": 5})  # members split into blocks, spatial tiles
    lazy_y = y.chunk({"init_time": 1, "lat": 5})
    calls = []

    def counting_scheduler(dsk, keys, **kwargs):
        calls.append(1)
        return dask.get(dsk, keys, **kwargs)

    with dask.config.set(scheduler=counting_scheduler):
        lazy = METRICS[name](lazy_f, lazy_y)
        assert calls == [], f"{name} computed before .compute()"
        assert lazy.chunks is not None
        value = lazy.compute()
    assert calls
    np.testing.assert_allclose(value.values, eager.values, rtol=1e-9, equal_nan=True)


def test_public_names_are_documented_with_a_reference():
    names = ["crps", "crps_skill_score", "ensemble_mean_rmse", "ensemble_spread", "spread_skill_ratio", "rank_histogram",
             "outlier_fraction", "exceedance_probability", "brier_score", "reliability", "ensemble_quantiles", "twcrps",
             "sigma_exceedance_counts", "best_member_rmse", "extreme_forecast_index", "satisfactory_ensemble_size"]
    for name in names:
        doc = getattr(verify, name).__doc__
        assert doc and "Estimator" in doc and any(ch.isdigit() for ch in doc), name
        assert "member_dim" in getattr(verify, name).__code__.co_varnames and "dim" in getattr(verify, name).__code__.co_varnames


def test_kernel_memory_does_not_grow_with_members():
    rng = np.random.default_rng(0)
    for m, layout in ((2000, "member-last"), (3000, "member-first")):
        x = rng.standard_normal((4800, m) if layout == "member-last" else (m, 4800), dtype=np.float32)
        view = x if layout == "member-last" else x.T
        y = rng.standard_normal(4800, dtype=np.float32)
        tracemalloc.start()
        fair, standard = _kernels.over_members(view, lambda b, yb, f, s: _kernels.crps_rows(b, yb, f, s),
                                               point_args=(y,), outputs=((), ()), sort=True, threads=2)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
        assert peak < 0.25 * x.nbytes, (layout, peak / x.nbytes)
        x64 = np.sort(view[:50].astype(np.float64), axis=1)
        d = x64 - y[:50, None]
        a = np.abs(d).mean(axis=1)
        g = (d * (2 * np.arange(1, m + 1) - m - 1)).sum(axis=1)
        np.testing.assert_allclose(standard[:50], a - g / m**2, rtol=1e-9)


def test_float32_rows_sort_like_numpy_through_order_keys():
    """The engine sorts float32 as int32 order keys: NaN of either sign last, -inf first, -0 with +0,
    subnormals and ties in place; member-first (strided) blocks and float64 rows the same."""
    rng = np.random.default_rng(3)
    special = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 1.0, 1.0, -2.5], np.float32)
    x = rng.choice(np.concatenate([special, rng.standard_normal(40).astype(np.float32)]), size=(300, 37))

    def copy_rows(block, out):
        out[:] = block

    for view in (x, np.ascontiguousarray(x.T).T, x.astype(np.float64)):
        (rows,) = _kernels.over_members(view, copy_rows, outputs=((37,),), sort=True, threads=2)
        np.testing.assert_array_equal(rows, np.sort(view, axis=-1).astype(np.float64))


def test_regions_average_inside_their_masks():
    f, y = field()
    score = verify.crps(f, y)
    box = verify.Region.box("dateline", -45, 45, 150, -150)  # wraps through 180
    out = verify.reduce_mean(score, DIMS, regions=[verify.TROPICS, box, verify.NH_EXTRATROPICS])
    w = verify.latitude_weights(f["lat"].values)
    for name, lat_ok, lon_ok in (("tropics", np.abs(f["lat"]) <= 20, np.ones(12, bool)),
                                 ("dateline", np.abs(f["lat"]) <= 45, (f["lon"] >= 150) & (f["lon"] <= 210)),
                                 ("nh_extratropics", f["lat"] > 20, np.ones(12, bool))):
        weights = (w * np.asarray(lat_ok))[None, :, None] * np.asarray(lon_ok)[None, None, :] * np.isfinite(score.values)
        expected = np.nansum(score.values * weights) / weights.sum()
        assert np.isclose(float(out.sel(region=name)), expected), name
    assert verify.Region.parse("eu:35:70:-10:30") == verify.Region.box("eu", 35, 70, -10, 30)


def test_bad_input_raises_clear_value_errors():
    f, y = field()
    with pytest.raises(ValueError, match="member dimension 'ens'"):
        verify.crps(f, y, member_dim="ens")
    with pytest.raises(ValueError, match="must not have the member dimension"):
        verify.crps(f, f)
    with pytest.raises(ValueError, match="q must be probabilities"):
        verify.ensemble_quantiles(f, [1.5])
    with pytest.raises(ValueError, match="tail must be"):
        verify.twcrps(f, y, 0.0, tail="middle")
    with pytest.raises(ValueError, match="regions need"):
        verify.crps(f, y, dim="init_time", regions=verify.REGIONS)
    with pytest.raises(ValueError, match="reliability needs dim"):
        verify.reliability(f, y, 0.0)
    with pytest.raises(ValueError, match="sizes must lie"):
        verify.satisfactory_ensemble_size(f, y, sizes=[100])
    with pytest.raises(ValueError, match="NAME:SOUTH:NORTH:WEST:EAST"):
        verify.Region.parse("europe:35:70")
    with pytest.raises(ValueError, match="increasing probabilities"):
        verify.extreme_forecast_index(f, CLIM.assign_coords(quantile=CLIM["quantile"][::-1].values))


def test_chunks_span_all_members_and_stay_within_the_budget():
    from forecast.verify.scores import ensemble_chunks

    sizes = {"member": 7424, "init_time": 3, "lead_time": 4, "lat": 33, "lon": 64}
    chunks = ensemble_chunks(sizes, {"member": 1, "lead_time": 4, "lat": 33, "lon": 64}, chunk_bytes=64 << 20)
    assert chunks["member"] == -1
    nbytes = 7424 * chunks["init_time"] * chunks["lead_time"] * chunks["lat"] * chunks["lon"] * 4
    assert nbytes <= 64 << 20
    small = ensemble_chunks({**sizes, "member": 8}, {"lead_time": 4}, chunk_bytes=64 << 20)
    assert small == {"member": -1, "init_time": 3, "lead_time": 4, "lat": 33, "lon": 64}


def test_slurm_cluster_is_constructible():
    pytest.importorskip("dask_jobqueue")
    from workflows.cluster import SlurmOptions

    cluster = SlurmOptions(jobs=2, cores=4, processes=2, memory="16GB", queue="cpu", account="proj").cluster()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert "#SBATCH" in script and "-p cpu" in script and "-A proj" in script and "--nworkers 2" in script


def test_score_store_on_a_mock_store_with_a_user_region(tmp_path):
    from forecast.verify.mock import write_mock_store
    from workflows.recipes import score_store

    store, truth = write_mock_store(tmp_path / "mock.zarr", members=8, init_times=1, leads=2, control=True)
    report = score_store(store, truth, tmp_path / "scores", workers=1, regions=[verify.Region.parse("box:0:60:-30:30")])
    scores = xr.open_dataset(report.parent / "scores.nc")
    assert list(scores["region"].values) == ["global", "nh_extratropics", "tropics", "sh_extratropics", "box"]
    expected = {"crps", "crps_standard", "crps_skill_score", "ensemble_mean_rmse", "ensemble_mean_bias", "spread",
                "spread_skill_ratio", "best_member_rmse", "outlier_fraction", "rank_histogram", "control_rmse",
                "twcrps_above_q90", "brier_score", "reliability_observed_frequency", "efi_map",
                "exceedance_probability_map", "sigma_exceedance_fraction"}
    assert expected <= set(scores.data_vars)
    assert int(scores["rank_histogram"].sel(region="global").sum()) == 1 * 2 * 17 * 32 * 2
    text = report.read_text()
    assert "spread-skill" in text and "Regions at" in text and "outliers" in text
    for png in ("crps_vs_lead.png", "rmse_vs_lead.png", "spread_skill_vs_lead.png", "rank_histograms.png",
                "reliability.png", "maps.png"):
        assert (report.parent / png).stat().st_size > 1000


def test_example_notebook_runs_headless(tmp_path, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from forecast.verify.mock import write_mock_store

    store, truth = write_mock_store(tmp_path / "nb.zarr", members=6, init_times=1, leads=3)
    monkeypatch.setenv("FORECAST_STORE", str(store))
    monkeypatch.setenv("FORECAST_TRUTH", str(truth))
    monkeypatch.setenv("FORECAST_PLOT", str(tmp_path / "crps.png"))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    notebook = nbformat.read(ROOT / "examples" / "crps_vs_lead.ipynb", as_version=4)
    nbclient.NotebookClient(notebook, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    assert (tmp_path / "crps.png").stat().st_size > 1000
