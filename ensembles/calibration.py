"""Calibration of a stochastic model's noise memory on training-period start dates.

The VAE's latent noise may persist from step to step (``latent_correlation``, rho). Its one-step
distribution is learned in training; rho only shapes how spread grows with lead. It is chosen here,
after training and on start dates from the training period (never the verification period), as the
candidate with the lowest fair CRPS averaged over leads and channels (normalised units).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import torch

from ensembles.seeds import member_generator
from forecast.data import Source
from forecast.rollout import rollout
from models.crps import fair_crps

log = logging.getLogger(__name__)

CANDIDATES = (0.0, 0.3, 0.5, 0.6, 0.7, 0.8, 0.9)


def ensemble_crps(model, analyses: Source, truth: Source, init_times, lead_steps: int, members: int, seed: int = 0) -> float:
    """Mean normalised fair CRPS of ``members`` latent-noise members over ``init_times`` and leads 1..lead_steps."""
    card = model.card
    weights = torch.as_tensor(truth.grid.area_weights(), dtype=torch.float32)
    total, count = 0.0, 0
    with torch.inference_mode():
        for time in np.asarray(init_times, dtype="datetime64[ns]"):
            x = model.normalise(torch.from_numpy(analyses.initial_state(time, card.channels)))
            generators = [member_generator(seed, time, j, "calibration") for j in range(members)]
            valid = time + np.arange(lead_steps + 1) * np.timedelta64(card.dt_hours, "h")
            target = model.normalise(torch.from_numpy(truth.fields(valid, card.channels)))
            for step, state in rollout(model, x.expand(members, -1, -1, -1), lead_steps, generators):
                if step:
                    total += float((fair_crps(state, target[step]) * weights).sum(dim=(-2, -1)).mean())
                    count += 1
    return total / max(count, 1)


def calibrate_latent_correlation(model, analyses: Source, truth: Source, init_times, lead_steps: int,
                                 members: int = 8, candidates=CANDIDATES) -> tuple[float, dict]:
    """The rho with the lowest ensemble CRPS, and the CRPS of every candidate tried.

    Candidates are tried in increasing order with the same seeds (common random numbers, so the curve
    is smooth in rho) and the search stops at the first candidate worse than the best so far: the CRPS
    is unimodal in rho (too little noise memory under-disperses, too much over-disperses)."""
    network = model.network
    original = network.config
    scores = {}
    try:
        for rho in sorted(float(c) for c in candidates):
            network.config = dataclasses.replace(original, latent_correlation=rho)
            scores[rho] = ensemble_crps(model, analyses, truth, init_times, lead_steps, members)
            log.info("calibration: latent_correlation %.2f -> fair CRPS %.5f", rho, scores[rho])
            if scores[rho] > min(scores.values()):
                break
    finally:
        network.config = original
    best = min(scores, key=scores.get)
    return best, scores
