"""This process's rank, read from the launcher's environment (the library takes it as plain arguments).

``torchrun`` sets ``RANK``/``WORLD_SIZE``/``LOCAL_RANK``; Slurm's ``srun`` sets ``SLURM_PROCID``/
``SLURM_NTASKS``/``SLURM_LOCALID``. The engine (``ensembles.engine``) takes ``rank``, ``world`` and the
local rank's device; only ``workflows/`` reads these variables.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from forecast.errors import InputError


@dataclass(frozen=True)
class RankInfo:
    """One process's place among the launcher's processes.

    Parameters
    ----------
    rank : int
        Global rank, ``0 <= rank < world``.
    world : int
        Number of processes.
    local_rank : int
        Rank on this node (chooses the GPU).
    """

    rank: int = 0
    world: int = 1
    local_rank: int = 0


def rank_from_environment(environ=None) -> RankInfo:
    """This process's rank: torchrun's variables first, then Slurm's, else a single rank.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read (default ``os.environ``).

    Examples
    --------
    >>> rank_from_environment({"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1"})
    RankInfo(rank=3, world=4, local_rank=1)
    """
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
