"""The fair CRPS on torch tensors (differentiable): the VAE's training loss and the calibration score.

Fair (unbiased in the ensemble size M) estimator of Ferro (2014):

    CRPS_fair = mean_i |x_i - y| - sum_{i,j} |x_i - x_j| / (2 M (M - 1)).

It is written in the pairwise form, O(M^2) in memory, which suits what it serves: a few samples per
input in training (2 in FuXi-ENS) and a handful of members in calibration. Verification of large
ensembles uses ``forecast.verify.crps``, the same estimator from sorted members in O(M log M).
"""

from __future__ import annotations

import torch


def fair_crps(members: torch.Tensor, target: torch.Tensor, member_dim: int = 0) -> torch.Tensor:
    """Pointwise fair CRPS of ``members`` against ``target``.

    Parameters
    ----------
    members : torch.Tensor
        The ensemble; the members lie along ``member_dim`` (at least 2 of them).
    target : torch.Tensor
        The verifying values, shaped like ``members`` without ``member_dim``.
    member_dim : int
        The members' dimension (non-negative).

    Returns
    -------
    torch.Tensor
        Shaped like ``target``.

    Examples
    --------
    Two members 0 and 2 against 1: mean error 1, half the mean pairwise distance 1, so 0.

    >>> fair_crps(torch.tensor([[0.0], [2.0]]), torch.tensor([1.0]))
    tensor([0.])
    """
    m = members.shape[member_dim]
    skill = (members - target.unsqueeze(member_dim)).abs().mean(dim=member_dim)
    pairs = (members.unsqueeze(member_dim) - members.unsqueeze(member_dim + 1)).abs()
    spread = pairs.sum(dim=(member_dim, member_dim + 1)) / (2 * m * (m - 1))
    return skill - spread
