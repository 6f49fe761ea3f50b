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


# -- bred-vector amplitude ------------------------------------------------------------------------
# factors of the deterministic model's RMSE at skill.lead_hours tried by ``amplitude_factor: auto``
AMPLITUDE_CANDIDATES = (0.05, 0.1, 0.15, 0.2, 0.25, 0.35, 0.45, 0.6, 0.8, 1.0)


def engine_crps(engine, truth: Source, models: list) -> float:
    """Mean normalised fair CRPS of the engine's whole member plan over its start dates and leads
    ``1..lead_steps`` (channels divided by the checkpoint card's standard deviation, area-weighted)."""
    from itertools import groupby

    from ensembles.engine import _to_numpy

    card = models[0].card
    std = torch.as_tensor(np.asarray(card.std, dtype=np.float32)).reshape(1, -1, 1, 1)
    weights = torch.as_tensor(truth.grid.area_weights(), dtype=torch.float32)
    members = engine.plan.members()
    ranges = [(group[0].index, group[-1].index + 1, checkpoint) for checkpoint, group in
              ((k, list(g)) for k, g in groupby(members, key=lambda m: m.checkpoint))]
    total, count = 0.0, 0
    for i, time in enumerate(engine.init_times):
        states = {}
        for start, stop, checkpoint in ranges:
            for lo in range(start, stop, engine.batch_size):
                for lead, state in engine.run_block(models[checkpoint], i, lo, min(stop, lo + engine.batch_size)):
                    if lead:
                        states.setdefault(lead, []).append(torch.from_numpy(np.array(_to_numpy(state), dtype=np.float32)))
        valid = time + np.arange(engine.lead_steps + 1) * np.timedelta64(engine.dt_hours, "h")
        target = torch.from_numpy(np.asarray(truth.fields(valid, engine.channels), dtype=np.float32))
        for lead, parts in states.items():
            ensemble = torch.cat(parts) / std
            total += float((fair_crps(ensemble, target[lead] / std[0]) * weights).sum(dim=(-2, -1)).mean())
            count += 1
    return total / max(count, 1)


def calibrate_amplitude_factor(engine, rmse: dict, truth: Source, candidates=AMPLITUDE_CANDIDATES) -> tuple[float, dict]:
    """The bred-vector amplitude factor (times ``rmse``, the deterministic RMSE per channel) with the
    lowest fair CRPS of ``engine``'s ensemble, and the CRPS of every candidate tried.

    ``engine`` runs on training-period start dates (never the verification period). Candidates are
    tried in increasing order with the same member seeds (common random numbers: the curve is smooth
    in the factor) and the search stops at the first candidate worse than the best so far (too small a
    perturbation under-disperses, too large over-disperses: the CRPS is unimodal in the factor)."""
    from models.checkpoint import load_checkpoint

    models = [load_checkpoint(path, engine.device) for path in engine.checkpoints]
    scores = {}
    for factor in sorted(float(c) for c in candidates):
        amplitude = {c: factor * float(v) for c, v in rmse.items()}
        trial = dataclasses.replace(engine, perturbation=dataclasses.replace(engine.perturbation, amplitude=amplitude))
        scores[factor] = engine_crps(trial, truth, models)
        log.info("calibration: amplitude_factor %.2f -> fair CRPS %.5f", factor, scores[factor])
        if scores[factor] > min(scores.values()):
            break
    return min(scores, key=scores.get), scores
