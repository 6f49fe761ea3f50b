"""``--dry-run``: the resolved config, the missing inputs and the HENS sizing; nothing loaded or written."""

import contextlib
import io
import math
import os
import re
import subprocess
import sys

import pytest
import yaml

from workflows.cli import main
from workflows.config import bundled_config, load_config
from workflows.dryrun import dry_run, run_size

HENS = str(bundled_config("hens"))


def listing(root):
    return sorted((str(p.relative_to(root)), p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*"))


def run_cli(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return code, out.getvalue(), err.getvalue()


def resolved_part(text: str) -> dict:
    return yaml.safe_load(text.split("# resolved config (every default filled in)\n")[1].split("# inputs\n")[0])


def test_hens_dry_run_prints_the_sizes_names_missing_inputs_and_writes_nothing(tmp_path):
    # a fresh process in an empty folder, as on a laptop: no checkpoints, no ERA5; torch is never imported
    script = ("import sys; from workflows.cli import main; code = main(sys.argv[1:]); "
              "print('TORCH IMPORTED' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")
    before = listing(tmp_path)
    result = subprocess.run([sys.executable, "-c", script, "run", HENS, "--dry-run"], cwd=tmp_path, capture_output=True,
                            text=True, timeout=120, env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr
    assert listing(tmp_path) == before == []
    text = result.stdout
    assert text.rstrip().endswith("no torch")
    assert "29 checkpoint(s) x 256 members (3712 +/- pairs in all, 128 per checkpoint) = 7,424 members" in text
    assert "leads: 61 (0 to 360 h every 6 h)" in text
    assert "missing: checkpoints: 29 of 29 missing (checkpoints/sfno-0 ... checkpoints/sfno-28" in text
    assert "missing: analyses: era5.zarr does not exist" in text
    assert re.search(r"all channels, float32 +307 MB per member-step +139 TB per start date", text)  # 74 x 721 x 1440
    assert "784,896 files per start date" in text
    assert "0.29 s per member-step (default from shared/PERF.md" in text
    assert "assumed 10 mantissa bits" in text
    config = resolved_part(text)
    assert config["ensemble"]["writer_threads"] == 2 and config["nightly"]["keep_cycles"] == 7  # defaults filled in
    assert config["paths"]["store"] == "hens-output/ensemble.zarr" and config["paths"]["analysis"] == "era5.zarr"
    assert len(config["sizing"]["channels"]) == 74 and len(set(config["sizing"]["channels"])) == 74


def test_hens_sizes_match_the_arithmetic():
    size = run_size(load_config(HENS))
    points = 721 * 1440
    assert size.members == 29 * 256 and size.pairs == 29 * 128 and not size.control
    assert size.start_date_bytes(statistics_only=False, compressed=False) == 74 * 7424 * 61 * points * 4
    assert size.member_step_bytes(statistics_only=True, compressed=False) == 10 * points * 4
    statistics = 64 * 4 * 61 * points * 4  # mean, std, min, max of the statistics-only channels
    assert size.start_date_bytes(True, True) == 10 * (9 + 10) / 32 * points * 4 * 7424 * 61 + statistics
    # batch 2: 10 stored channels x 2 members x 4 MB = 83 MB per lead: 3 leads fit the 256 MiB shard buffer
    assert size.lead_chunk == 3 and size.windows == size.blocks == 3712  # 256 per checkpoint: no window straddles two
    assert size.files_per_start_date == 10 * 3712 * math.ceil(61 / 3) + 64 * 4 * math.ceil(61 / 3)
    rollout, breeding = size.gpu_hours
    assert rollout == pytest.approx(7424 * 60 * 0.29 / 3600)
    assert breeding == pytest.approx((3712 + 29) * 3 * 0.29 / 3600)
    assert size.accumulator_bytes == 64 * 24 * 61 * points


def test_seconds_per_member_step_from_the_config_is_named_as_its_source():
    text = dry_run(load_config(HENS, ["sizing.seconds_per_member_step=1.0"]), "run")
    assert "at 1 s per member-step (sizing.seconds_per_member_step in the config)" in text
    assert "GPU time per start date: 123.7 GPU-hours rollout" in text  # 7424 x 60 s / 3600


def test_every_command_with_the_flag_prints_the_resolved_config_and_exits_0(tmp_path):
    for command in ("run", "train", "skill", "nightly"):
        code, out, _ = run_cli(command, str(bundled_config("tiny")), "--dry-run", "--workdir", str(tmp_path / "w"))
        assert code == 0
        config = resolved_part(out)
        assert config["paths"]["workdir"] == str(tmp_path / "w") and config["train"]["rollout_steps"] == 1
        assert ("# sizing" in out) == (command in ("run", "nightly"))
        assert ("train: 2 of 2 checkpoint(s) to train" in out) == (command == "train")
        assert "missing:" in out
    assert listing(tmp_path) == []


def test_bad_config_still_fails_with_exit_2():
    code, _, err = run_cli("run", HENS, "--dry-run", "ensemble.compression.keepbits=most")
    assert code == 2 and "compression.keepbits" in err


def test_dry_run_on_a_built_world_reads_the_card_and_writes_nothing(tiny_world):
    from workflows.config import with_workdir

    root = tiny_world.paths.resolve("checkpoints").parent
    before = listing(root)
    code, out, _ = run_cli("run", str(bundled_config("tiny")), "--dry-run", "--workdir", str(root))
    assert code == 0 and listing(root) == before
    assert "missing:" not in out and "all inputs exist" in out
    assert "card " in out and "4 channels on 17x32" in out
    assert "2 checkpoint(s) x 4 members (4 +/- pairs in all, 2 per checkpoint) + 1 control = 9 members" in out
    size = run_size(with_workdir(tiny_world, str(root)))
    assert size.start_date_bytes(False, False) == 4 * 9 * 3 * 17 * 32 * 4


def test_hens_channels_are_makanis_74chq_order_and_the_statistics_split_is_consistent():
    from tests.models.makani_mock import HENS_CHANNELS  # makani's channel_names of the HENS packages

    config = load_config(HENS)
    channels = list(config.sizing.channels)
    assert channels == ["d2m" if c == "2d" else c for c in HENS_CHANNELS]
    statistics = config.ensemble.statistics
    assert set(statistics.only) <= set(statistics.channels) <= set(channels)
    kept = [c for c in channels if c not in statistics.only]
    assert kept == ["u10m", "v10m", "t2m", "sp", "msl", "tcwv", "d2m", "z500", "t850", "q700"]


def test_a_dry_run_sized_from_the_planet_s_settings_does_not_import_torch(tmp_path):
    """Without a checkpoint or a sizing section the run is sized from ``planet.settings`` (a ``PlanetConfig``),
    which is read and checked without torch."""
    script = ("import sys; from workflows.cli import main; code = main(sys.argv[1:]); "
              "print('TORCH IMPORTED' if 'torch' in sys.modules else 'no torch'); sys.exit(code)")
    tiny = str(bundled_config("tiny"))
    result = subprocess.run([sys.executable, "-c", script, "run", tiny, "--dry-run", "planet.settings.nlat=21"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    assert result.returncode == 0, result.stderr
    assert "the planet's settings (no checkpoint card yet)" in result.stdout
    assert result.stdout.rstrip().endswith("no torch")
    assert resolved_part(result.stdout)["planet"]["settings"]["nlat"] == 21
