"""Per-member seeds: a hash of the member's identity, so any member can be regenerated alone."""

from __future__ import annotations

import numpy as np
import torch

from forecast.hashing import derived_seed


def member_seed(base_seed: int, init_time, member: int, purpose: str = "member") -> int:
    """A 63-bit seed from ``(base_seed, init_time, member, purpose)``.

    The same identity always gives the same seed, on any rank and in any batch; different members,
    start times or purposes (``"bred"``, ``"latent"``, ...) give unrelated seeds.

    >>> member_seed(1, "2000-01-01T00", 5) == member_seed(1, np.datetime64("2000-01-01T00:00"), 5)
    True
    >>> member_seed(1, "2000-01-01T00", 5) != member_seed(1, "2000-01-01T00", 6)
    True
    """
    if member < 0:
        raise ValueError(f"member index must be non-negative, got {member}")
    stamp = np.datetime_as_string(np.datetime64(init_time, "s"))
    return derived_seed(int(base_seed), stamp, int(member), purpose)


def member_generator(base_seed: int, init_time, member: int, purpose: str = "member") -> torch.Generator:
    """A CPU ``torch.Generator`` seeded with :func:`member_seed`."""
    return torch.Generator().manual_seed(member_seed(base_seed, init_time, member, purpose))
