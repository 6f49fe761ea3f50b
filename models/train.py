"""Training loops: one-step (optionally multi-step) regression for SFNO, on normalised planet or ERA5 data.

All randomness (initial weights, batch sampling) comes from the checkpoint's seed: the same seed and
data give the same checkpoint. Under ``torch.distributed`` (``torchrun``/``srun``) every rank draws the
same global batch and trains on its slice; DDP averages the gradients, so the run follows the same
loss curve as one process with the same global batch.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from models.crps import fair_crps
from forecast.errors import InputError
from forecast.hashing import batch_sampler_seed, training_noise_seed
from models.train_settings import TrainSettings, VAELossSettings  # noqa: F401  (TrainSettings: re-exported)

log = logging.getLogger(__name__)


def seeded_init(build, seed: int):
    """Build a module with its initial weights drawn from ``seed`` without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def rank_and_world() -> tuple[int, int]:
    """``(rank, world size)`` of the initialised ``torch.distributed`` group, else ``(0, 1)``."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1


def sample_windows(data: np.ndarray, length: int, batch: int, generator: torch.Generator, valid: np.ndarray | None = None) -> torch.Tensor:
    """``(batch, length, channel, lat, lon)`` windows of consecutive times drawn with ``generator``."""
    starts = np.arange(len(data) - length + 1) if valid is None else valid
    pick = torch.randint(len(starts), (batch,), generator=generator).numpy()
    index = starts[pick][:, None] + np.arange(length)[None, :]
    return torch.from_numpy(data[index])


def weighted_mse(prediction: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean squared error, averaged over batch and channels."""
    return (((prediction - target) ** 2) * weights).sum(dim=(-2, -1)).mean()


def train(model: nn.Module, data: np.ndarray, settings: TrainSettings, seed: int, area_weights: np.ndarray,
          loss_fn=None, valid_starts: np.ndarray | None = None, device: str = "cpu",
          autocast_bf16: bool = False) -> list[float]:
    """Train ``model`` (a ``ForecastModel`` with ``.network``) on normalised ``data`` ``(time, channel, lat, lon)``.

    ``loss_fn(model, window, generators, weights) -> loss`` (``generators``: one per row of the rank's
    slice, seeded from the row's place in the global batch) defaults to the area-weighted MSE of an
    autoregressive rollout over ``settings.rollout_steps``. Returns the loss per step (mean over ranks).
    The model trains on ``device`` (batches are drawn on the CPU and copied there; noise generators stay
    on the CPU, so a row's noise does not depend on the device) and is back on the CPU afterwards;
    ``autocast_bf16`` runs the forward pass and loss under bf16 autocast.
    """
    rank, world = rank_and_world()
    if settings.batch_size % world:
        raise InputError(f"batch_size {settings.batch_size} must be a multiple of the {world} training processes")
    device = torch.device(device)
    model.to(device)
    weights = torch.as_tensor(area_weights, dtype=torch.float32, device=device)
    weights = weights / weights.sum()
    loss_fn = loss_fn or rollout_mse
    network = model.network
    trainable = network
    if world > 1:
        ids = [device] if device.type == "cuda" else None
        trainable = nn.parallel.DistributedDataParallel(network, device_ids=ids)
        model.network = trainable
    optimiser = torch.optim.AdamW(network.parameters(), lr=settings.learning_rate, weight_decay=settings.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimiser, lambda i: min(1.0, (i + 1) / 20) * 0.5 * (1 + math.cos(math.pi * i / settings.steps))
    )
    sampler = torch.Generator().manual_seed(batch_sampler_seed(seed))
    share = settings.batch_size // world
    losses = []
    model.train()
    try:
        for step in range(settings.steps):
            window = sample_windows(data, settings.rollout_steps + 1, settings.batch_size, sampler, valid_starts)
            rows = range(rank * share, (rank + 1) * share)
            window = window[rows.start:rows.stop].to(device)
            noise = [torch.Generator().manual_seed(training_noise_seed(seed, step, row)) for row in rows]
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=autocast_bf16):
                loss = loss_fn(model, window, noise, weights, step=step)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            value = loss.detach()
            if world > 1:
                torch.distributed.all_reduce(value)
                value = value / world
            losses.append(float(value))
            if settings.log_every and (step + 1) % settings.log_every == 0:
                log.info("step %d/%d loss %.5f", step + 1, settings.steps, np.mean(losses[-settings.log_every:]))
    finally:
        model.network = network
        model.to("cpu")
        model.eval()
    return losses


def rollout_mse(model, window: torch.Tensor, generators, weights: torch.Tensor, step: int = 0) -> torch.Tensor:
    """Area-weighted MSE of an autoregressive rollout over the window (the SFNO's loss)."""
    x = window[:, 0]
    total = 0.0
    for k in range(1, window.shape[1]):
        x = model.network(x)
        total = total + weighted_mse(x, window[:, k], weights)
    return total / (window.shape[1] - 1)


@dataclass(frozen=True)
class VAELoss(VAELossSettings):
    """Fair CRPS over ``samples`` latent draws per input plus ``beta`` x KL(q || p) (FuXi-ENS).

    ``sample_from="posterior"`` draws the training samples from q(z | x_t, x_t+1), as a conditional VAE
    does; ``"prior"`` draws them from p(z | x_t), which trains the ensemble's spread directly. For the first
    ``mse_warmup_steps`` the loss is the MSE of the prior-mean forecast (plus the KL term). With
    ``rollout_steps > 1`` each sample continues from its own previous prediction. The settings and their
    checks: :class:`models.train_settings.VAELossSettings`.
    """


    def __call__(self, model, window: torch.Tensor, generators, weights: torch.Tensor, step: int = 10**9) -> torch.Tensor:
        n = self.samples
        batch = window.shape[0]
        warmup = step < self.mse_warmup_steps
        x = window[:, 0].repeat_interleave(n, dim=0)  # (batch * samples, channel, lat, lon)
        sample_generators = [g for g in generators for _ in range(n)]
        total = 0.0
        for k in range(1, window.shape[1]):
            target = window[:, k]
            x, kl = model.network(x, target=target.repeat_interleave(n, dim=0), generator=sample_generators,
                                  sample_from=self.sample_from, use_mean=warmup)
            if warmup:
                total = total + weighted_mse(x, target.repeat_interleave(n, dim=0), weights) + self.beta * kl
            else:
                members = x.reshape(batch, n, *x.shape[1:])
                total = total + weighted_fair_crps(members, target, weights) + self.beta * kl
        return total / (window.shape[1] - 1)


def weighted_fair_crps(members: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean of the fair CRPS (:func:`models.crps.fair_crps`).

    Parameters
    ----------
    members : torch.Tensor
        ``(batch, n, channel, lat, lon)``, n >= 2.
    target : torch.Tensor
        ``(batch, channel, lat, lon)``.
    weights : torch.Tensor
        ``(lat, lon)`` area weights.
    """
    return (fair_crps(members, target, member_dim=1) * weights).sum(dim=(-2, -1)).mean()
