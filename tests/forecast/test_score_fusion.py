"""The fused score set (one read and one sort per point, forecast/verify/_fused.py) against the composition
of the public scores it replaces in score_ensemble: every variable of scores.nc, on a synthetic ensemble
with NaN members, NaN truth, ties, a control member, three checkpoints and several regions, in several
Dask chunks."""

import numpy as np
import pytest
import xarray as xr

from forecast import verify
from forecast.verify import scores as score_set
from forecast.verify.mock import mock_ensemble

REGIONS = (*verify.REGIONS, verify.Region.box("box", 10, 60, -30, 40))


def composed_channel_scores(f, y, dims, regions, events=None, twcrps_threshold=None, climate_sample=None,
                            control=None, group=None, rank_reference_members=1024):
    """The score set as score_ensemble composed it from the public functions before the fusion."""
    from forecast.verify._grouped import group_sizes, reliable_outlier_fraction, reliable_rank_frequency

    m = f.sizes["member"]
    fair, standard = verify.crps_pair(f, y)
    scores = {
        "crps": verify.reduce_mean(fair, dims, regions),
        "crps_standard": verify.reduce_mean(standard, dims, regions),
        "ensemble_mean_rmse": verify.ensemble_mean_rmse(f, y, dim=dims, regions=regions),
        "ensemble_mean_bias": verify.ensemble_mean_bias(f, y, dim=dims, regions=regions),
        "spread": verify.ensemble_spread(f.where(y.notnull()), dim=dims, regions=regions),
        "spread_skill_ratio": verify.spread_skill_ratio(f, y, dim=dims, regions=regions),
        "best_member_rmse": verify.best_member_rmse(f, y, dim=dims, regions=regions),
        "outlier_fraction": verify.outlier_fraction(f, y, dim=dims, regions=regions),
        "rank_histogram": verify.rank_histogram(f, y, dim=dims, regions=regions),
        "sigma_exceedance_fraction": verify.sigma_exceedance_counts(f, dim=dims) / m,
    }
    if control is not None:
        scores["control_rmse"] = np.sqrt(verify.reduce_mean((f.isel(member=control, drop=True) - y) ** 2, dims, regions))
    if events:
        names = list(events)
        event_dim = xr.DataArray(names, dims="event", name="event")
        scores["crps_skill_score"] = verify.crps_skill_score(f, y, climate_sample, climatology_dim="climate_sample",
                                                             dim=dims, regions=regions)
        scores["twcrps_above_q90"] = verify.twcrps(f, y, twcrps_threshold, dim=dims, regions=regions)
        scores["brier_score"] = xr.concat([verify.brier_score(f, y, t, above=above, dim=dims, regions=regions)
                                           for t, above in events.values()], dim=event_dim)
        diagrams = [verify.reliability(f, y, t, above=above, bins=10, dim=dims) for t, above in events.values()]
        for key in ("forecast_probability", "observed_frequency", "count"):
            scores[f"reliability_{key}"] = xr.concat([d[key] for d in diagrams], dim=event_dim)
    scores["crps_by_init_time"] = verify.reduce_mean(fair, [d for d in dims if d != "init_time"])
    if group is not None:
        parts = verify.spread_decomposition(f, group=group, dim=dims, regions=regions, truth=y)
        within, between = parts["within_group_variance"], parts["between_group_variance"]
        ratio, sizes = (between / within).clip(min=0.0), group_sizes(f, "member", group)
        scores.update({"spread_skill_ratio_grouped": verify.spread_skill_ratio(f, y, dim=dims, regions=regions,
                                                                               group=group),
                       "within_group_variance": within, "between_group_variance": between,
                       "outlier_reliable_value_grouped": reliable_outlier_fraction(ratio, sizes)})
        if sizes.sum() <= rank_reference_members:
            scores["rank_reliable_frequency_grouped"] = reliable_rank_frequency(ratio, sizes)
    return scores


def awkward_ensemble(members=12, checkpoints=3, control=True):
    """A mock ensemble with NaN members, NaN truth, members tied with each other and with the truth, a
    control member and checkpoint labels, chunked like open_ensemble but split in latitude bands."""
    forecast, truth = mock_ensemble(members=members, init_times=3, leads=3, nlat=13, nlon=24, seed=4)
    truth = truth.astype(np.float32)
    rng = np.random.default_rng(0)
    for name in forecast.data_vars:
        values = forecast[name].values.astype(np.float32)
        nan = rng.random(values.shape) < 0.02
        values[nan] = np.nan
        values[:, :, :, 3:5] = np.round(values[:, :, :, 3:5], -1 if name == "z500" else 0)  # ties in two rows
        values[2:5, :, 1, 6] = np.nan  # three members missing at one row, every start date
        values[:, 0, 0, 7, 5] = np.nan  # every member missing at one point
        values[1:, 1, 2, 8, :3] = np.nan  # one valid member only
        forecast[name] = forecast[name].copy(data=values)
        t = truth[name].values
        t[:, 3:5] = np.round(t[:, 3:5], -1 if name == "z500" else 0)
        t[rng.random(t.shape) < 0.01] = np.nan
        truth[name] = truth[name].copy(data=t)
    forecast = forecast.assign_coords(checkpoint=("member", np.arange(members) * checkpoints // members))
    forecast.attrs["member_plan"] = '{"control": %s}' % ("true" if control else "false")
    chunks = {"member": -1, "init_time": 2, "lead_time": 3, "lat": 7, "lon": 24}
    return forecast.chunk(chunks), truth.chunk({"lat": 5, "lon": 10})  # the truth's own chunks differ


@pytest.mark.parametrize("control, checkpoints", [(True, 3), (False, 1)])
def test_fused_score_set_equals_the_composed_public_scores(monkeypatch, control, checkpoints):
    forecast, truth = awkward_ensemble(control=control, checkpoints=checkpoints)
    fused = score_set.score_ensemble(forecast, truth, regions=REGIONS).compute(scheduler="threads")
    monkeypatch.setattr(score_set, "channel_scores", composed_channel_scores)
    composed = score_set.score_ensemble(forecast, truth, regions=REGIONS).compute(scheduler="threads")
    assert list(fused.data_vars) == list(composed.data_vars)
    assert ("control_rmse" in fused) == control and ("within_group_variance" in fused) == (checkpoints > 1)
    exact = ("rank_histogram", "reliability_count")  # counts; the means add the same terms in another order
    for name in composed.data_vars:
        assert fused[name].dims == composed[name].dims, name
        assert fused[name].attrs == composed[name].attrs, name
        assert np.isfinite(composed[name].values).any(), name  # the comparison means something
        if name in exact:
            xr.testing.assert_equal(fused[name], composed[name])
        else:
            xr.testing.assert_allclose(fused[name], composed[name], rtol=1e-7, atol=0)
    xr.testing.assert_identical(fused.coords.to_dataset(), composed.coords.to_dataset())
    assert fused.attrs == composed.attrs


def consumers_of_the_members(lazy, forecast, name):
    """Graph layers that take the member data of channel ``name`` directly."""
    from dask.highlevelgraph import HighLevelGraph

    graph = HighLevelGraph.merge(*[lazy[v].data.__dask_graph__() for v in lazy.data_vars])
    source = forecast[name].data.name
    return [layer for layer, dependencies in graph.dependencies.items() if source in dependencies]


def test_every_score_of_a_channel_comes_from_one_pass_over_the_members(monkeypatch):
    """The members of a channel feed two tasks per chunk: the fused score sums (best member included) and
    the maps' slice; the composition fed each score its own pass."""
    forecast, truth = awkward_ensemble()
    fused = consumers_of_the_members(score_set.score_ensemble(forecast, truth, regions=REGIONS), forecast, "z500")
    assert sorted(layer.rsplit("-", 1)[0] for layer in fused) == ["chunk_block", "getitem"]
    monkeypatch.setattr(score_set, "channel_scores", composed_channel_scores)
    composed = consumers_of_the_members(score_set.score_ensemble(forecast, truth, regions=REGIONS), forecast, "z500")
    assert len(composed) > 10
