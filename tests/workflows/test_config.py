"""One route from config to library: the library's settings classes are the config sections, checked in one
place; the score settings come from the config, the command line overrides them."""

import dataclasses

import pytest

from ensembles.plan import PerturbationSettings
from models.train_settings import TrainSettings, VAELossSettings
from ensembles.stats import StatisticsSpec
from forecast.data.planet_config import PlanetConfig
from forecast.errors import SettingError
from workflows.cli import build_parser, score_section
from workflows.cluster import SlurmOptions
from workflows.config import ConfigError, ScoreSection, bundled_config, library_settings, load_config

TINY = bundled_config("tiny")


def test_sections_are_the_library_settings_classes():
    config = load_config(TINY)
    assert isinstance(config.ensemble.perturbation, PerturbationSettings)
    assert isinstance(config.ensemble.statistics, StatisticsSpec)
    assert type(config.planet.settings) is PlanetConfig and config.planet.settings.nlat == 17
    assert type(config.score.slurm) is SlurmOptions
    assert isinstance(config.train, TrainSettings) and type(config.train.vae_loss) is VAELossSettings


def test_library_settings_drops_the_workflow_keys_and_keeps_the_record_unchanged():
    config = load_config(TINY, ["ensemble.perturbation.amplitude_factor=0.5"])
    settings = library_settings(PerturbationSettings, config.ensemble.perturbation, amplitude={"z500": 1.0})
    assert type(settings) is PerturbationSettings  # the store records asdict(settings): no amplitude_factor
    assert dataclasses.asdict(settings) == {"method": "bred_vector", "channels": ("z500",), "amplitude": {"z500": 1.0},
                                            "length_scale_km": 2000.0, "cycles": 2, "boundary_latitude": 20.0,
                                            "last_cycle_ends": "t"}


@pytest.mark.parametrize("override, message", [
    ("ensemble.perturbation.cycles=0", "ensemble.perturbation.cycles must be at least 1, got 0"),
    ("experiments.x.perturbation.last_cycle_ends=t+12h", "experiments.x.perturbation.last_cycle_ends must be one of"),
    ("ensemble.perturbation.amplitude={z500: -1}", "ensemble.perturbation.amplitude.z500 must be a non-negative number"),
    ("ensemble.statistics.quantiles=[1.5]", "ensemble.statistics.quantiles must be numbers in [0, 1], got [1.5]"),
    ("ensemble.compression.zstd_level=23", "ensemble.compression.zstd_level must lie in 0..22, got 23"),
    ("planet.settings.nlat=0", "planet.settings.nlat must be positive, got 0"),
    ("planet.settings.stirring_band=[8, 3]", "planet.settings.stirring_band must be two wavenumbers"),
    ("planet.settings.nlatt=3", "unknown config key 'planet.settings.nlatt'; did you mean 'nlat'?"),
    ("planet.settings.obs_error_std=3", "planet.settings.obs_error_std must be a mapping, got 3"),
    ("score.chunk_mb=0", "score.chunk_mb must be positive, got 0"),
    ("score.worker_memory=lots", "score.worker_memory must be a size such as 4GiB or 500MB, got 'lots'"),
    ("score.slurm.cores=0", "score.slurm.cores must be at least 1, got 0"),
    ("score.regions=[europe:70:35:0:10]", "score.regions[0] is unusable: region 'europe': south (70.0) must be below"),
    ("score.regions=['a:1:2:3:4', europe:35:70]", "score.regions[1] is unusable: region 'europe:35:70' must read NAME:"),
    ("score.slurm.walltimee=1", "unknown config key 'score.slurm.walltimee'; did you mean 'walltime'?"),
    ("train.steps=0", "train.steps must be at least 1, got 0"),
    ("extra_models.vae.model=vae", None),
    ("extra_models.vae.vae_loss.samples=1", "extra_models.vae.vae_loss.samples must be at least 2, got 1"),
    ("train.vae_loss.sample_from=both", "train.vae_loss.sample_from must be one of ('posterior', 'prior'), got 'both'"),
    ("nightly.mode=cron", "nightly.mode must be one of ('local', 'slurm'), got 'cron'"),
    ("nightly.cycle_hours=[24]", "nightly.cycle_hours must be hours from 0 to 23, got [24]"),
    ("nightly.slurm.score=[--wrap=ls]", "nightly.slurm.score holds '--wrap=ls', which is not an sbatch option"),
    ("train.period.stop=1999-01-01T00", "train.period stops (1999-01-01T00) before it starts (2000-01-01T00)"),
    ("skill.init_times.every_hours=0", "skill.init_times.every_hours must be positive, got 0"),
    ("experiments.w.members_per_checkpoint=-1", "experiments.w.members_per_checkpoint must be at least 0, got -1"),
    ("train.model=gnn", "train.model must be one of ('sfno', 'vae'), got 'gnn'"),
    ("train.architecture.embed_dim=wide", "train.architecture.embed_dim must be an integer, got 'wide'"),
    ("train.architecture.num_layers=0", "train.architecture.num_layers must be positive, got 0"),
    ("train.architecture.big_skip=1", "train.architecture.big_skip must be true or false, got 1"),
    ("train.architecture.residual=true", "train.architecture.residual is not one of the SFNO hyper-parameters ["),
    ("train.architecture.extra_inputs={sun: 1}", "train.architecture.extra_inputs cannot be used: unknown extra inputs"),
    ("train.model=vae", "train.architecture.big_skip is not one of the VAE hyper-parameters ["),
    ("extra_models.vae={model: vae, architecture: {latent_correlation: 1}}",
     "extra_models.vae.architecture.latent_correlation must lie in [0, 1), got 1"),
    ("extra_models.vae={model: vae, architecture: {latent_correlation: auto}}", None),
])
def test_a_bad_setting_is_one_line_naming_its_key_path(override, message):
    if message is None:  # a good setting next to the bad ones
        assert load_config(TINY, [override]).extra_models["vae"].model == "vae"
        return
    with pytest.raises(ConfigError) as error:
        load_config(TINY, [override])
    assert str(error.value).startswith(message) and "\n" not in str(error.value)


def test_the_training_settings_recorded_in_the_card_are_the_loop_s_alone():
    settings = library_settings(TrainSettings, load_config(TINY).train)
    assert dataclasses.asdict(settings) == {"steps": 30, "batch_size": 4, "learning_rate": 0.005, "weight_decay": 0.0,
                                            "rollout_steps": 1, "log_every": 50}


def test_a_section_changed_in_python_is_checked_as_a_file_would_be():
    config = load_config(TINY)
    with pytest.raises(SettingError, match="^device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got 'tpu'$"):
        dataclasses.replace(config.ensemble, device="tpu")
    with pytest.raises(SettingError, match="^stops"):
        dataclasses.replace(config.ensemble.init_times, stop="1999-01-01T00")


def test_the_same_check_refuses_the_setting_from_python():
    with pytest.raises(SettingError, match="^cycles must be at least 1, got 0$"):
        PerturbationSettings(cycles=0)
    with pytest.raises(SettingError, match=r"^mountains\[1\] must be \[latitude"):
        PlanetConfig(mountains=[(40, 100, 1500, 12), (1, 2)])


def test_score_flags_override_the_config_s_score_section(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("score: {chunk_mb: 16, worker_memory: 2GiB, regions: ['europe:35:70:-10:30'], "
                      "slurm: {cores: 4, memory: 8GB}}\n")
    args = build_parser().parse_args(["score", "s.zarr", "--truth", "t.zarr", "--config", str(config),
                                      "--chunk-mb", "8", "--slurm", "2", "--slurm-memory", "16GB", "--workers", "0"])
    section = score_section(args)
    assert (section.chunk_mb, section.worker_memory, section.regions, section.workers) == (8.0, "2GiB", ("europe:35:70:-10:30",), 0)
    assert section.slurm == SlurmOptions(jobs=2, cores=4, memory="16GB")
    assert section.keywords()["slurm"] is section.slurm
    plain = score_section(build_parser().parse_args(["score", "s.zarr", "--truth", "t.zarr"]))
    assert plain == ScoreSection() and plain.keywords()["slurm"] is None  # no config, no flags: the defaults


@pytest.mark.parametrize("section", [
    ScoreSection(),
    ScoreSection(workers=3, scheduler="tcp://h:8786", worker_memory="4GiB", chunk_mb=12.5, allow_partial=True,
                 regions=("europe:35:70:-10:30", "alps:45:48:5:15")),
    ScoreSection(slurm=SlurmOptions(jobs=2, cores=16, processes=4, memory="64GB", walltime="02:00:00", queue="cpu",
                                    account="proj", interface="ib0", job_extra=("--exclusive", "--qos=high"))),
])
def test_the_nightly_score_job_s_options_give_back_the_section(section):
    """In Slurm mode the nightly passes its score section to ``slurm/score.sbatch`` as ``forecast score`` options."""
    args = build_parser().parse_args(["score", "s.zarr", "--truth", "t.zarr", *section.arguments()])
    assert score_section(args) == section
