"""Deterministic skill of a checkpoint: the RMSE per channel at a lead, which sets bred-vector amplitudes.

``forecast skill`` runs the unperturbed model from analyses at many start times, compares with the
truth ``lead_hours`` later, and stores the area-weighted RMSE per channel (physical units) as
``skill.json`` beside the checkpoint. HENS sets each channel's bred-vector amplitude to 0.35 times the
48 h RMSE.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import torch

from forecast.data import Source
from forecast.files import write_atomic
from forecast.errors import InputError
from forecast.rollout import rollout

SKILL_FILE = "skill.json"


def deterministic_rmse(model, analyses: Source, truth: Source, init_times, lead_hours: int, batch_size: int = 8) -> dict:
    """Area-weighted RMSE per channel at ``lead_hours`` over ``init_times`` (physical units)."""
    card = model.card
    if lead_hours % card.dt_hours:
        raise InputError(f"lead {lead_hours} h is not a multiple of the model step {card.dt_hours} h")
    steps = lead_hours // card.dt_hours
    weights = torch.as_tensor(truth.grid.area_weights(), dtype=torch.float64)
    init_times = np.asarray(init_times, dtype="datetime64[ns]")
    valid = init_times + np.timedelta64(lead_hours, "h")
    squared = torch.zeros(len(card.channels), dtype=torch.float64)
    device = _device_of(model)  # the model's steps run where the model is (a GPU or the CPU)
    with torch.inference_mode():
        for first in range(0, len(init_times), batch_size):
            times = init_times[first:first + batch_size]
            x = model.normalise(torch.from_numpy(analyses.fields(times, card.channels)).to(device))
            start = times if getattr(model, "needs_time", False) else None
            for _, state in rollout(model, x, steps, start_time=start):
                pass
            forecast = model.denormalise(state).double().cpu()
            target = torch.from_numpy(truth.fields(valid[first:first + batch_size], card.channels)).double()
            squared += (((forecast - target) ** 2) * weights).sum(dim=(-2, -1)).sum(dim=0)
    rmse = torch.sqrt(squared / len(init_times))
    return dict(zip(card.channels, (float(v) for v in rmse)))


def _device_of(model) -> torch.device:
    tensors = (*model.parameters(), *model.buffers()) if isinstance(model, torch.nn.Module) else ()
    return tensors[0].device if tensors else torch.device("cpu")


def save_skill(checkpoint_dir: str | os.PathLike, rmse: dict, lead_hours: int, n_init: int, source: str) -> Path:
    """Write a checkpoint's RMSE per channel at ``lead_hours`` to its ``skill.json`` (atomically); returns the path."""
    path = Path(checkpoint_dir) / SKILL_FILE
    record = {"lead_hours": lead_hours, "rmse": rmse, "n_init_times": n_init, "analyses": source}
    write_atomic(path, json.dumps(record, indent=2, sort_keys=True))
    return path


def load_skill(checkpoint_dir: str | os.PathLike, lead_hours: int) -> dict:
    """The RMSE per channel from a checkpoint's ``skill.json``, refused if computed at another lead."""
    path = Path(checkpoint_dir) / SKILL_FILE
    if not path.is_file():
        raise InputError(f"{path} not found: run 'forecast skill' for this checkpoint first")
    try:
        record = json.loads(path.read_text())
        record["rmse"], record["lead_hours"]
    except (ValueError, KeyError, TypeError) as error:
        raise InputError(f"{path} is not a skill file ({type(error).__name__}: {error}): rerun 'forecast skill'") from None
    if record.get("lead_hours") != lead_hours:
        raise InputError(f"{path} holds the RMSE at {record.get('lead_hours')} h, not at {lead_hours} h: rerun 'forecast skill'")
    return record["rmse"]
