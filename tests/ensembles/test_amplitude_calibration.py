"""``perturbation.amplitude_factor: auto`` on the tiny world: the factor is chosen by fair CRPS on
training-period start dates, recorded in the store, reused on resume and shown in the report."""

import dataclasses

import numpy as np
import pytest

from ensembles.calibration import AMPLITUDE_CANDIDATES


def auto_config(config, workdir):
    """The tiny world's config with ``amplitude_factor: auto`` and its store under ``workdir``."""
    ensemble = config.ensemble
    perturbation = dataclasses.replace(ensemble.perturbation, amplitude_factor="auto")
    return dataclasses.replace(config, ensemble=dataclasses.replace(ensemble, perturbation=perturbation),
                               paths=dataclasses.replace(config.paths, store=str(workdir / "auto.zarr")))


def test_amplitude_factor_auto_is_chosen_recorded_and_reused(tiny_world, tmp_path, monkeypatch):
    from ensembles import calibration
    from ensembles.skill import load_skill
    from forecast.store import EnsembleStore
    from workflows import recipes

    assert min(AMPLITUDE_CANDIDATES) <= 0.05 and max(AMPLITUDE_CANDIDATES) >= 0.6
    config = auto_config(tiny_world, tmp_path)
    engine = recipes.build_engine(config)
    record = engine.attrs["amplitude_calibration"]
    curve = {float(k): v for k, v in record["fair_crps"].items()}
    assert record["chosen"] in AMPLITUDE_CANDIDATES and record["chosen"] == min(curve, key=curve.get)
    assert len(curve) >= 2 and all(np.isfinite(v) for v in curve.values())
    times = np.array(record["init_times"], dtype="datetime64[h]")
    skill_times = config.skill.init_times.times()
    assert times.min() >= skill_times.min() and times.max() <= skill_times.max()  # training period only
    checkpoints = recipes.checkpoint_dirs(config, None)
    rmse = np.mean([load_skill(d, config.skill.lead_hours)["z500"] for d in checkpoints])
    assert engine.perturbation.amplitude["z500"] == pytest.approx(record["chosen"] * rmse)
    path = recipes.run_ensemble(config)
    assert EnsembleStore.open(path).schema.attrs["amplitude_calibration"] == record

    def refuse(*args, **kwargs):
        raise AssertionError("an existing store keeps its factor; no second calibration")

    monkeypatch.setattr(calibration, "calibrate_amplitude_factor", refuse)
    assert recipes.build_engine(config).perturbation == engine.perturbation
    report = recipes.score_store(path, config.paths.resolve("nature"), tmp_path / "scores", workers=1)
    assert "amplitude_factor: auto" in report.read_text()


def test_amplitude_factor_must_be_a_number_or_auto_when_the_config_is_read():
    from forecast.errors import SettingError
    from workflows.config import ConfigError, PerturbationSection, bundled_config, load_config

    with pytest.raises(ConfigError, match="^ensemble.perturbation.amplitude_factor must be a number or 'auto', got 'big'$"):
        load_config(bundled_config("tiny"), ["ensemble.perturbation.amplitude_factor=big"])
    with pytest.raises(SettingError, match="^amplitude_factor must be at least 0, got -1"):
        PerturbationSection(amplitude_factor=-1)  # the same check from Python
