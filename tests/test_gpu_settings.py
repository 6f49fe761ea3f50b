"""GPU-facing settings checked on the CPU: numerical mode, training device and backend, batch_size auto.

The GPU measurements themselves are ``bench/gpu_check.py`` (docs/gpu.md); its CPU run is tested here too.
"""

import sys
import threading
import time
from dataclasses import replace

import pytest
import torch

from models.precision import set_numerical_mode
from workflows.batch_size import recorded_batch_size, resolve_batch_size
from workflows.config import ConfigError, TrainSection
from workflows.ddp import choose_backend

no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="checks what happens without a GPU")


def _kernel_settings():
    return (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic,
            torch.get_float32_matmul_precision(), torch.utils.deterministic.fill_uninitialized_memory)


@pytest.fixture
def restored_kernel_settings():
    before = _kernel_settings()
    yield
    deterministic, warn_only, matmul, cudnn_tf32, benchmark, cudnn_deterministic, precision, fill = before
    torch.utils.deterministic.fill_uninitialized_memory = fill
    torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn_tf32
    torch.backends.cudnn.benchmark = benchmark
    torch.backends.cudnn.deterministic = cudnn_deterministic
    torch.set_float32_matmul_precision(precision)


def test_deterministic_mode_fixes_the_gpu_kernels(restored_kernel_settings):
    env = {}
    settings = set_numerical_mode(True, "cuda:0", environ=env)
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    assert _kernel_settings() == (True, False, False, False, False, True, "highest", False)
    assert settings["deterministic_algorithms"] and not settings["tf32"]


def test_training_warns_where_a_kernel_has_no_deterministic_variant(restored_kernel_settings):
    set_numerical_mode(True, "cuda:0", environ={}, warn_only=True)
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()


def test_fast_mode_allows_tf32_and_autotuning(restored_kernel_settings):
    env = {}
    set_numerical_mode(False, "cuda", environ=env)
    assert "CUBLAS_WORKSPACE_CONFIG" not in env
    assert _kernel_settings() == (False, False, True, True, True, False, "high", False)


def test_a_users_cublas_setting_is_kept(restored_kernel_settings):
    env = {"CUBLAS_WORKSPACE_CONFIG": ":16:8"}
    set_numerical_mode(True, "cuda:1", environ=env)
    assert env["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


def test_cpu_runs_are_left_exactly_as_they_were(restored_kernel_settings):
    env = {}
    before = _kernel_settings()
    assert set_numerical_mode(True, "cpu", environ=env) == {} and set_numerical_mode(False, "cpu", environ=env) == {}
    assert _kernel_settings() == before and env == {}


@no_gpu
def test_train_device_auto_is_the_cpu_without_a_gpu():
    from workflows.training import training_device

    assert TrainSection().device == "auto"
    assert training_device(TrainSection(), local_rank=3) == "cpu"
    with pytest.raises(ConfigError, match="train.device"):
        training_device(replace(TrainSection(), device="cuda"), local_rank=0)


def test_gloo_without_gpus_and_nccl_only_on_gpus():
    assert choose_backend("auto", "cpu") == "gloo"
    assert choose_backend("gloo", "cuda:0") == "gloo"  # ranks sharing one GPU
    expected = "nccl" if torch.distributed.is_nccl_available() else "gloo"
    assert choose_backend("auto", "cuda:1") == expected
    with pytest.raises(ConfigError, match="'nccl' needs GPUs"):
        choose_backend("nccl", "cpu")
    with pytest.raises(ConfigError, match="train.backend must be one of"):
        choose_backend("mpi", "cpu")


def test_bf16_autocast_training_on_the_cpu_follows_float32():
    from forecast.grid import Grid
    from models.card import ModelCard
    from models.checkpoint import build_model
    from models.sfno import SFNOConfig
    from models.train import TrainSettings, seeded_init, train

    grid = Grid(9, 16)
    architecture = SFNOConfig(in_channels=2, out_channels=2, nlat=9, nlon=16, embed_dim=8, num_layers=1,
                              scale_factor=1, residual_prediction=True).to_dict()
    card = ModelCard(family="sfno", channels=("a", "b"), grid=grid.to_dict(), dt_hours=6, mean=[0.0, 0.0],
                     std=[1.0, 1.0], architecture=architecture, name="t")
    data = torch.randn(12, 2, 9, 16, generator=torch.Generator().manual_seed(0)).cumsum(0).numpy() / 3
    settings = TrainSettings(steps=4, batch_size=2, learning_rate=1e-3, log_every=0)
    curves = {}
    for bf16 in (False, True):
        model = seeded_init(lambda: build_model(card), 0)
        curves[bf16] = train(model, data, settings, 0, grid.area_weights(), device="cpu", autocast_bf16=bf16)
        assert next(model.parameters()).device.type == "cpu"
    assert curves[True] != curves[False]  # autocast did run in bf16
    assert torch.allclose(torch.tensor(curves[True]), torch.tensor(curves[False]), rtol=0.05)


# -- batch_size: auto -----------------------------------------------------------------------------
def test_a_number_is_used_as_given_and_bad_values_are_refused(tmp_path):
    assert resolve_batch_size(6, tmp_path / "none.zarr", measure=lambda: 99, device="cuda:0") == 6
    for bad in (0, -2, True, "big", 2.5):
        with pytest.raises(ConfigError, match="ensemble.batch_size"):
            resolve_batch_size(bad, tmp_path / "none.zarr", measure=lambda: 99, device="cpu")


def test_auto_is_measured_once_by_rank_zero_and_other_gpu_ranks_read_the_store(tiny_world, tmp_path):
    from workflows.recipes import build_engine

    path = tmp_path / "store.zarr"
    measured = []

    def measure():
        measured.append(1)
        return 4

    assert recorded_batch_size(path) is None
    result = {}
    waiter = threading.Thread(target=lambda: result.update(rank1=resolve_batch_size(
        "auto", path, measure=lambda: 99, device="cuda:0", rank=1, poll_seconds=0.05)))
    waiter.start()
    assert resolve_batch_size("auto", path, measure=measure, device="cuda:0", rank=0) == 4
    time.sleep(0.2)
    assert waiter.is_alive()  # rank 1 waits for rank 0's store instead of measuring its own
    config = replace(tiny_world, ensemble=replace(tiny_world.ensemble, batch_size=4))
    build_engine(config).create_store(path)
    waiter.join(10)
    assert result == {"rank1": 4} and measured == [1]
    assert recorded_batch_size(path) == 4
    # every later run, on any rank and device, reuses the recorded size (the CPU's own choice would be 8)
    auto = replace(tiny_world, paths=replace(tiny_world.paths, store=str(path)),
                   ensemble=replace(tiny_world.ensemble, batch_size="auto"))
    assert build_engine(auto).batch_size == 4
    assert build_engine(auto, rank=3).batch_size == 4
    fresh = replace(auto, paths=replace(auto.paths, store=str(tmp_path / "fresh.zarr")))
    assert build_engine(fresh).batch_size == 8


def test_a_gpu_rank_that_never_sees_the_store_says_why(tmp_path):
    from forecast.store import StoreError

    with pytest.raises(StoreError, match="rank 0 chooses it"):
        resolve_batch_size("auto", tmp_path / "missing.zarr", measure=lambda: 99, device="cuda:0", rank=2,
                           wait_seconds=0.1, poll_seconds=0.02)
    assert resolve_batch_size("auto", tmp_path / "missing.zarr", measure=lambda: 8, device="cpu", rank=2) == 8


def test_gpu_check_runs_on_the_cpu_at_tiny_size(tmp_path, capsys):
    """Rows 4-6 of bench/gpu_check.py (rows 1-3 repeat the engine, regeneration and two-rank tests)."""
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("gpu_check", Path(__file__).parents[1] / "bench" / "gpu_check.py")
    gpu_check = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = gpu_check  # dataclasses look their module up
    spec.loader.exec_module(gpu_check)
    assert gpu_check.main(["--device", "cpu", "--tiny", "--skip", "1,2,3", "--workdir", str(tmp_path / "w")]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("| ") and line[2].isdigit()]
    assert [r.split("|")[1].strip() for r in rows] == ["4", "4a", "5", "6"]
    assert all("| INFO |" in r for r in rows)  # no pass mark on the CPU
    assert "batch auto 8" in rows[0] and "output wait" in rows[0] and "relative RMS bf16 - fp32: step 1" in rows[2]
    assert "[4] window: engine" in out  # said before the run's statistics are written
    assert not (tmp_path / "w").exists()  # the work folder is removed


def test_statistics_updated_in_threads_are_bit_identical_to_one_thread():
    import numpy as np

    from ensembles.stats import EnsembleAccumulator, StatisticsSpec

    spec = StatisticsSpec(channels=tuple(f"c{k}" for k in range(7)), thresholds={"c3": (0.5,)}, tail_members=2)
    rng = np.random.default_rng(0)
    batches = [rng.standard_normal((n, 7, 5, 8)).astype(np.float32) * 10.0 ** rng.integers(-3, 4) for n in (3, 1, 4)]
    results = []
    for threads in (1, 3, 16):
        accumulator = EnsembleAccumulator(spec, 2, (5, 8))
        for lead in (0, 1):
            for batch in batches:
                accumulator.update(lead, batch + lead, threads=threads)
        results.append(accumulator.to_arrays())
    for other in results[1:]:
        assert results[0].keys() == other.keys()
        for key in results[0]:
            assert np.array_equal(np.asarray(results[0][key]), np.asarray(other[key]), equal_nan=True), key
