"""Ranks from the launcher's environment, and how members are split between them.

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; Slurm's ``srun`` sets ``SLURM_PROCID``/
``SLURM_NTASKS``/``SLURM_LOCALID``. Inference needs no communication: each rank takes a contiguous
run of the member plan's windows and writes only those shards.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forecast.errors import InputError


@dataclass(frozen=True)
class RankInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0


def rank_from_environment(environ=None) -> RankInfo:
    """This process's rank: torchrun's variables first, then Slurm's, else a single rank."""
    env = os.environ if environ is None else environ
    for rank_key, world_key, local_key in (("RANK", "WORLD_SIZE", "LOCAL_RANK"), ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID")):
        if rank_key in env and world_key in env:
            try:
                info = RankInfo(int(env[rank_key]), int(env[world_key]), int(env.get(local_key, 0)))
            except ValueError:
                raise InputError(f"{rank_key}={env[rank_key]!r} / {world_key}={env[world_key]!r} are not integers") from None
            if not 0 <= info.rank < info.world:
                raise InputError(f"rank {info.rank} is outside a world of {info.world}")
            return info
    return RankInfo()


def split_windows(windows: list, world: int) -> list[list]:
    """Contiguous, balanced runs of ``windows`` for ``world`` ranks (a rank may get none).

    >>> split_windows([(0, 2), (2, 4), (4, 6)], 2)
    [[(0, 2)], [(2, 4), (4, 6)]]
    """
    if world < 1:
        raise InputError(f"world size must be at least 1, got {world}")
    n = len(windows)
    return [windows[(r * n) // world:((r + 1) * n) // world] for r in range(world)]


def device_for(device: str, local_rank: int) -> str:
    """``cuda`` becomes ``cuda:<local_rank mod GPUs>``; ``auto`` does the same when a GPU is visible and
    is ``cpu`` otherwise; anything else is returned as is."""
    if device in ("cuda", "auto"):
        import torch

        count = torch.cuda.device_count()
        if count == 0:
            if device == "auto":
                return "cpu"
            raise InputError("device 'cuda' was asked for but no GPU is visible")
        return f"cuda:{local_rank % count}"
    return device
