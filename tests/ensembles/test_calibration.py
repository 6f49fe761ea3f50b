"""Calibration draws (ensembles/calibration.py) come from member identity, like every other seed."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import torch

from ensembles.calibration import ensemble_crps
from forecast.grid import Grid

GRID = Grid(3, 4)
CHANNELS = ("z500",)


class RecordingModel:
    """Adds one draw of each member's generator per step and records the first draw per start date."""

    def __init__(self):
        self.card = SimpleNamespace(channels=CHANNELS, dt_hours=6)
        self.draws = []

    def normalise(self, x):
        return x

    def step(self, x, generators):
        noise = torch.stack([torch.randn(x.shape[1:], generator=g) for g in generators])
        self.draws.append(noise[:, 0, 0, 0].tolist())
        return x + noise


class ConstantSource:
    grid = GRID

    def initial_state(self, time, channels):
        return np.zeros((1, len(channels), *GRID.shape), dtype=np.float32)

    def fields(self, times, channels):
        return np.zeros((len(times), len(channels), *GRID.shape), dtype=np.float32)


def draws(init_times, members):
    model = RecordingModel()
    ensemble_crps(model, ConstantSource(), ConstantSource(), np.array(init_times, dtype="datetime64[ns]"), 1, members)
    return model.draws


def test_a_start_date_gets_the_same_draws_whatever_dates_come_before_it():
    alone = draws(["2000-01-03T00"], 3)
    after_another = draws(["2000-01-01T00", "2000-01-03T00"], 3)
    assert after_another[1] == alone[0]


def test_no_two_members_of_two_start_dates_share_a_stream():
    # seed + 1000 * i + j gave member 1000 of the first date the stream of member 0 of the second
    first, second = draws(["2000-01-01T00", "2000-01-02T00"], 1001)
    assert len(set(first) | set(second)) == 2002
