"""The rollout: a generator that steps a model forward and yields every state, the initial one first."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch


def rollout(model, x: torch.Tensor, steps: int, generators: Sequence[torch.Generator] | None = None,
            floor: torch.Tensor | None = None, start_time=None) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(step, state)`` for ``step = 0..steps`` on normalised ``(batch, channel, lat, lon)`` states.

    ``generators`` (one per batch row) feed stochastic models; ``floor`` (``(1, channel, 1, 1)``,
    ``-inf`` where unbounded) clips channels that must stay non-negative. The input is copied, never
    modified; each yielded state is the model's own tensor, so copy it before changing it.
    ``start_time`` (``datetime64``, one or one per row): the valid time of ``x``. When given, each step
    is called as ``model.step(x, generators, time=t)`` with ``t`` the valid time of the state it steps
    from (``start_time + (step - 1) * model.card.dt_hours``); models with a cos-zenith input need it.

    Examples
    --------
    >>> class Halve:
    ...     def step(self, x, generator=None):
    ...         return x / 2
    >>> [float(s[0, 0, 0, 0]) for _, s in rollout(Halve(), torch.ones(1, 1, 1, 1), 2)]
    [1.0, 0.5, 0.25]
    """
    if steps < 0:
        raise ValueError(f"steps must be non-negative, got {steps}")
    x = x.clone()
    yield 0, x
    if start_time is not None:
        start_time = np.asarray(start_time, dtype="datetime64[ns]")
        dt = np.timedelta64(int(model.card.dt_hours), "h")
    for step in range(1, steps + 1):
        if start_time is None:
            x = model.step(x, generators)
        else:
            x = model.step(x, generators, time=start_time + (step - 1) * dt)
        if floor is not None:
            x = torch.maximum(x, floor)
        yield step, x
