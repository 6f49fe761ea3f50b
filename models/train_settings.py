"""Settings of a training run, without torch: the config's ``train`` section is :class:`TrainSettings`
(plus the keys only the workflows read) and ``train.vae_loss`` is :class:`VAELossSettings`, checked here
when the config is read (``--dry-run`` included) and when ``models.train`` is called from Python."""

from __future__ import annotations

from dataclasses import dataclass

from forecast.settings import at_least, one_of, positive

SAMPLE_FROM = ("posterior", "prior")


@dataclass(frozen=True)
class TrainSettings:
    """Optimiser and loop settings of one training run (AdamW, warm-up then cosine schedule).

    Parameters
    ----------
    steps : int
        Optimiser steps.
    batch_size : int
        Global batch (windows per step, split over the DDP ranks).
    learning_rate : float
        Peak learning rate.
    weight_decay : float
        AdamW weight decay.
    rollout_steps : int
        Autoregressive steps per window in the loss.
    log_every : int
        Steps between loss log lines (0: none).
    """

    steps: int = 600
    batch_size: int = 8
    learning_rate: float = 2e-3
    weight_decay: float = 0.0
    rollout_steps: int = 1
    log_every: int = 50

    def __post_init__(self):
        for key in ("steps", "batch_size", "rollout_steps"):
            at_least(getattr(self, key), 1, key)
        positive(self.learning_rate, "learning_rate")
        at_least(self.weight_decay, 0, "weight_decay")
        at_least(self.log_every, 0, "log_every")


@dataclass(frozen=True)
class VAELossSettings:
    """The FuXi-ENS training loss (``models.train.VAELoss``): fair CRPS over ``samples`` latent draws per
    input (from the ``posterior`` q(z | x_t, x_t+1) or the ``prior`` p(z | x_t)) plus ``beta`` x KL(q || p);
    the MSE of the prior-mean forecast for the first ``mse_warmup_steps``.

    >>> VAELossSettings(samples=1)
    Traceback (most recent call last):
    forecast.errors.SettingError: samples must be at least 2, got 1
    """

    samples: int = 2
    beta: float = 1e-3
    sample_from: str = "posterior"
    mse_warmup_steps: int = 0

    def __post_init__(self):
        at_least(self.samples, 2, "samples")  # the fair CRPS needs two draws per input
        one_of(self.sample_from, SAMPLE_FROM, "sample_from")
        at_least(self.beta, 0, "beta")
        at_least(self.mse_warmup_steps, 0, "mse_warmup_steps")
