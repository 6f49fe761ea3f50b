"""Shared fixtures: a tiny planet world built once per test session through the real recipes."""

from __future__ import annotations

import logging

import pytest
import torch

torch.set_num_threads(1)


def pytest_configure(config):
    config.addinivalue_line("markers", "system: needs root, Slurm or mounts; skips with the reason where they are "
                            "missing, fails there instead when FORECAST_REQUIRE_SYSTEM_TESTS=1 (.ci/run)")


@pytest.fixture(scope="session")
def tiny_config(tmp_path_factory):
    from workflows.config import bundled_config, load_config, with_workdir

    workdir = tmp_path_factory.mktemp("tiny")
    return with_workdir(load_config(bundled_config("tiny")), str(workdir))


@pytest.fixture(scope="session")
def tiny_world(tiny_config):
    """Planet, two trained checkpoints and their skill files for the tiny config."""
    from workflows.recipes import compute_skill, make_planet, train_checkpoints

    logging.getLogger().setLevel(logging.WARNING)
    make_planet(tiny_config)
    train_checkpoints(tiny_config)
    compute_skill(tiny_config)
    return tiny_config


@pytest.fixture(scope="session")
def forecast_processes(tmp_path_factory):
    """Run ``forecast`` commands as separate processes forked from a warm server (``tests/cli_process.py``)."""
    from tests.cli_process import ForecastProcesses

    return ForecastProcesses(tmp_path_factory.mktemp("processes"))
