"""The model interface every forecast model meets, and the wrapper that gives a network its card."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import nn

from models.card import ModelCard


@runtime_checkable
class ForecastModel(Protocol):
    """One step of ``card.dt_hours`` on normalised ``(batch, channel, lat, lon)`` tensors.

    Deterministic models ignore ``generator``; stochastic ones (the VAE) draw all their noise from it.
    Models with ``needs_time`` (an SFNO with a cos-zenith input) also need ``time``: the valid time of
    ``x`` (``numpy.datetime64``, one for the batch or one per row); the rollout passes it when given a
    start time. Others accept and ignore it.
    """

    card: ModelCard
    needs_time: bool

    def step(self, x: torch.Tensor, generator: torch.Generator | None = None, time=None) -> torch.Tensor:
        """One step from ``x`` (normalised) to the state ``card.dt_hours`` later."""

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Physical units to the model's normalised units."""

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised units back to physical units."""


class Normalised(nn.Module):
    """Holds a card's normalisation statistics as buffers: ``(x - mean) / std`` per channel."""

    def __init__(self, card: ModelCard):
        super().__init__()
        self.card = card
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).reshape(1, -1, 1, 1), persistent=False)

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - mean) / std`` per channel."""
        return (x - self.mean) / self.std

    def denormalise(self, x: torch.Tensor) -> torch.Tensor:
        """``x * std + mean`` per channel."""
        return x * self.std + self.mean


class DeterministicModel(Normalised):
    """A network that maps the normalised state to the next one (SFNO)."""

    def __init__(self, card: ModelCard, network: nn.Module):
        super().__init__(card)
        self.network = network

    @property
    def needs_time(self) -> bool:
        """Whether ``step`` needs the valid time of its input (see ``ForecastModel``)."""
        return bool(getattr(self.network, "needs_time", False))

    def step(self, x: torch.Tensor, generator: torch.Generator | None = None, time=None) -> torch.Tensor:
        """One step of the network; ``generator`` is ignored, ``time`` passed on when the network needs it."""
        if self.needs_time:
            return self.network(x, time)
        return self.network(x)

    def forward(self, x: torch.Tensor, time=None) -> torch.Tensor:
        """``step`` without a generator (for ``nn.Module`` callers)."""
        return self.step(x, None, time)
