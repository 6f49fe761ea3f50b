"""Initial-condition perturbations on normalised states.

A perturbation is called as ``perturbation(x, generators) -> dx``: ``x`` is the analysis
``(1, channel, lat, lon)``, ``generators`` holds one ``torch.Generator`` per perturbation wanted, and
``dx`` is ``(len(generators), channel, lat, lon)``. Perturbation ``i`` draws only from
``generators[i]``, so it does not depend on which other perturbations share the call. The engine
adds ``sign * dx`` to the analysis and clips channels that must stay non-negative.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

import numpy as np
import torch

from forecast.errors import InputError
from forecast.grid import Grid
from forecast.random_fields import SphericalNoise


class Perturbation(Protocol):
    """An initial-state perturbation: ``(x, generators) -> dx``, one perturbation per generator."""

    def __call__(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor: ...


def hemispheric_rms(dx: torch.Tensor, grid: Grid, boundary: float = 20.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Area-weighted RMS of ``dx`` ``(..., lat, lon)`` poleward of ``boundary`` degrees in the north and south."""
    lat = torch.as_tensor(grid.lat, dtype=dx.dtype, device=dx.device)
    weights = torch.as_tensor(grid.latitude_weights(), dtype=dx.dtype, device=dx.device)
    result = []
    for band in (lat >= boundary, lat <= -boundary):
        if not band.any():
            raise InputError(f"no grid latitudes poleward of {boundary} degrees")
        w = weights[band] / weights[band].sum()
        power = (dx[..., band, :] ** 2).mean(dim=-1)
        result.append(torch.sqrt((power * w).sum(dim=-1)))
    return result[0], result[1]


def hemispheric_rescale(dx: torch.Tensor, amplitude: torch.Tensor, grid: Grid, boundary: float = 20.0) -> torch.Tensor:
    """Rescale ``dx`` ``(batch, channel, lat, lon)`` so its RMS poleward of ``boundary`` in each hemisphere
    equals ``amplitude`` ``(channel,)``, dividing by a norm blended linearly in latitude across the tropics
    (HENS's hemispheric centring). Channels whose norm or amplitude is zero come out zero."""
    north, south = hemispheric_rms(dx, grid, boundary)
    lat = torch.as_tensor(grid.lat, dtype=dx.dtype, device=dx.device)
    blend = ((lat + boundary) / (2 * boundary)).clamp(0.0, 1.0)  # 1 in the north, 0 in the south
    norm = south[..., None] + (north - south)[..., None] * blend  # (batch, channel, lat)
    amplitude = amplitude.to(dx).reshape(1, -1, 1)
    scale = torch.where(norm > 0, amplitude / torch.where(norm > 0, norm, 1.0), torch.zeros_like(norm))
    return dx * scale[..., None]


class SphericalGaussian:
    """Spherically correlated Gaussian noise, ``amplitude`` (normalised units, per channel) times a
    unit-variance field of correlation length ``length_scale_km``."""

    def __init__(self, grid: Grid, amplitude: torch.Tensor, length_scale_km: float = 500.0):
        self.noise = SphericalNoise(grid, length_scale_km)
        self.amplitude = torch.as_tensor(amplitude, dtype=torch.float32).reshape(1, -1, 1, 1)

    def __call__(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        channels = x.shape[1]
        fields = [self.noise.sample((channels,), g) for g in generators]
        return torch.stack(fields).to(x) * self.amplitude.to(x)


class BredVector:
    """HENS bred vectors, one per generator, each seeded only from its own generator.

    Seed: spherically correlated noise on ``seed_channels`` (z500 in HENS), rescaled hemispherically to
    the target amplitude. Each of ``cycles`` breeding cycles runs the control and the perturbed state one
    model step, takes the difference and rescales it (:func:`hemispheric_rescale`) to ``amplitude`` per
    channel (HENS: 0.35 x the model's 48 h RMSE, from ``forecast skill``).

    ``last_cycle_ends`` says where the breeding ends:

    * ``"t"`` (earth2studio's ``HemisphericCentredBredVector``): breeding starts from the analysis at
      ``t - cycles * dt`` and each cycle restarts from the next analysis, so the last difference is
      valid at the initial time ``t``. Needs ``history``, the analyses at ``t - cycles*dt .. t - dt``.
    * ``"t+6h"`` (the original HENS code): every cycle starts from the analysis at ``t``, so the bred
      vector is the difference grown over one step, valid at ``t + dt``, and is added to the state at
      ``t``. Needs no earlier analyses.

    Unlike earth2studio, which draws the seed noise of all members of a batch from one chained
    generator (bred vectors of different pairs in one batch then correlate at 0.83-0.89), each bred
    vector here depends only on its own generator.
    
    ``times`` (one valid time per cycle) is for models that need the valid time of their input (a
    cos-zenith input): ``step`` is then called as ``step(state, time)``.
    """

    def __init__(self, step: Callable[[torch.Tensor], torch.Tensor], grid: Grid, amplitude: torch.Tensor,
                 seed_channels: torch.Tensor, length_scale_km: float = 500.0, cycles: int = 3,
                 boundary: float = 20.0, last_cycle_ends: str = "t", history: torch.Tensor | None = None,
                 times: Sequence | None = None):
        if cycles < 1:
            raise InputError(f"bred vectors need at least one breeding cycle, got {cycles}")
        if last_cycle_ends not in ("t", "t+6h"):
            raise InputError(f"last_cycle_ends must be 't' or 't+6h', got {last_cycle_ends!r}")
        if last_cycle_ends == "t" and (history is None or len(history) != cycles):
            raise InputError(f"bred vectors ending at t need the {cycles} analyses before the initial time")
        self.step = step
        self.grid = grid
        self.amplitude = torch.as_tensor(amplitude, dtype=torch.float32)
        self.seed_mask = torch.as_tensor(seed_channels, dtype=torch.float32).reshape(1, -1, 1, 1)
        self.noise = SphericalNoise(grid, length_scale_km)
        self.cycles = cycles
        self.boundary = boundary
        self.last_cycle_ends = last_cycle_ends
        self.history = history
        if times is not None and len(times) != cycles:
            raise InputError(f"bred vectors need one valid time per breeding cycle ({cycles}), got {len(times)}")
        self.times = times

    def __call__(self, x: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
        n, channels = len(generators), x.shape[1]
        seed = torch.stack([self.noise.sample((channels,), g) for g in generators]).to(x) * self.seed_mask.to(x)
        dx = hemispheric_rescale(seed, self.amplitude, self.grid, self.boundary)
        if self.last_cycle_ends == "t":
            starts = [self.history[k:k + 1].to(x) for k in range(self.cycles)]
        else:
            starts = [x] * self.cycles
        for k, start in enumerate(starts):
            extra = () if self.times is None else (self.times[k],)
            control = self.step(start, *extra)
            perturbed = self.step(start.expand(n, -1, -1, -1) + dx, *extra)
            dx = hemispheric_rescale(perturbed - control, self.amplitude, self.grid, self.boundary)
        return dx


def non_negative_floor(channels: Sequence[str], mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """Normalised floor ``(1, channel, 1, 1)``: the value of physical zero for non-negative channels,
    ``-inf`` for the others."""
    from forecast.channels import NON_NEGATIVE

    floor = [(-m / s) if c in NON_NEGATIVE else -np.inf for c, m, s in zip(channels, mean, std)]
    return torch.tensor(floor, dtype=torch.float32).reshape(1, -1, 1, 1)
