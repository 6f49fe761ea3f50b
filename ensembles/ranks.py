"""How members are split between ranks, and which device a rank uses.

Inference needs no communication: each rank takes a contiguous run of the member plan's windows and
writes only those shards. The rank itself is read from the launcher's environment in ``workflows/``
(``workflows.launcher``) and handed to the engine as plain integers.
"""

from __future__ import annotations

from forecast.errors import InputError


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
