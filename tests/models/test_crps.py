"""The torch fair CRPS (models/crps.py) against a brute-force double loop and properscoring's standard CRPS."""

from __future__ import annotations

import numpy as np
import properscoring
import torch

from models.crps import fair_crps


def test_fair_crps_matches_brute_force_and_properscoring():
    rng = np.random.default_rng(0)
    members = rng.normal(size=(7, 3, 4)).astype(np.float64)
    truth = rng.normal(size=(3, 4))
    m = len(members)
    pairs = sum(np.abs(members[i] - members[j]) for i in range(m) for j in range(m))
    brute = np.mean([np.abs(x - truth) for x in members], axis=0) - pairs / (2 * m * (m - 1))
    got = fair_crps(torch.from_numpy(members), torch.from_numpy(truth)).numpy()
    np.testing.assert_allclose(got, brute, rtol=1e-12)
    # properscoring's estimator divides the pair sum by 2 M^2 instead of 2 M (M - 1)
    standard = properscoring.crps_ensemble(truth, np.moveaxis(members, 0, -1))
    np.testing.assert_allclose(got, standard + pairs / (2 * m * m) - pairs / (2 * m * (m - 1)), rtol=1e-12)


def test_member_dim_and_gradient():
    members = torch.tensor([[[0.0, 1.0]], [[2.0, 1.0]]], requires_grad=True)  # (member, 1, 2)
    moved = members.movedim(0, 1)  # (1, member, 2)
    target = torch.tensor([[1.0, 0.0]])
    assert torch.equal(fair_crps(members, target), fair_crps(moved, target, member_dim=1))
    fair_crps(members, target).sum().backward()
    assert torch.isfinite(members.grad).all()
