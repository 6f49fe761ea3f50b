import numpy as np
import pytest
import torch

from ensembles.perturb import BredVector, SphericalGaussian, hemispheric_rescale, hemispheric_rms
from ensembles.plan import MemberPlan, parse_member_range
from forecast.errors import InputError
from ensembles.seeds import member_generator, member_seed
from forecast.grid import Grid

GRID = Grid(17, 32)


def test_member_seed_depends_on_identity_only():
    a = member_seed(1, "2000-01-01", 3, "perturbation")
    assert a == member_seed(1, np.datetime64("2000-01-01T00:00:00"), 3, "perturbation")
    others = {member_seed(1, "2000-01-01", 4, "perturbation"), member_seed(1, "2000-01-02", 3, "perturbation"),
              member_seed(2, "2000-01-01", 3, "perturbation"), member_seed(1, "2000-01-01", 3, "noise")}
    assert a not in others and len(others) == 4
    assert 0 <= a < 2**63
    assert torch.equal(torch.rand(3, generator=member_generator(1, "2000-01-01", 3)),
                       torch.rand(3, generator=member_generator(1, "2000-01-01", 3)))


def test_member_plan_is_checkpoint_major_with_pairs_and_control():
    plan = MemberPlan(n_checkpoints=2, members_per_checkpoint=4, control=True)
    assert plan.size == 9
    members = plan.members()
    assert [m.checkpoint for m in members] == [0, 0, 0, 0, 0, 1, 1, 1, 1]
    assert [m.sign for m in members] == [0, 1, -1, 1, -1, 1, -1, 1, -1]
    assert [m.pair for m in members] == [-1, 0, 0, 1, 1, 2, 2, 3, 3]
    assert plan.windows(2) == [(0, 2), (2, 4), (4, 6), (6, 8), (8, 9)]
    assert plan.blocks(2) == [(0, 2), (2, 4), (4, 5), (5, 6), (6, 8), (8, 9)]  # split where the checkpoint changes
    assert plan.blocks_for(4, 6, 2) == [(4, 5), (5, 6)]
    # pair 0 (members 1, 2) straddles two blocks: both compute it in the same canonical group
    assert plan.perturbation_groups([0], 2) == [[0]] and plan.perturbation_groups([1, 2], 4) == [[0, 1], [2, 3]]
    with pytest.raises(ValueError, match="batch_size"):
        plan.blocks(0)


def test_the_block_count_without_listing_equals_the_listed_blocks():
    """``n_blocks`` (what the dry run and the pre-flight size check use) against ``blocks`` itself."""
    cases = 0
    for checkpoints in range(1, 5):
        for members in range(0, 11):
            for control in (True, False):
                for perturbation in ("paired", "single", "none"):
                    try:
                        plan = MemberPlan(checkpoints, members, control=control, perturbation=perturbation)
                    except InputError:
                        continue
                    for batch in range(1, 24):
                        assert plan.n_blocks(batch) == len(plan.blocks(batch)), (plan, batch)
                        cases += 1
    assert cases > 4000
    # instant for a billion members per checkpoint: 14.5e9 + 1 windows (the control makes the count odd), and the
    # control shifts each of the 28 checkpoint starts off a window edge, splitting one window each
    assert MemberPlan(29, 10**9).n_blocks(2) == 29 * 10**9 // 2 + 1 + 28


@pytest.mark.parametrize("text", ["5:3", "-1:2", "0:99", "x"])
def test_bad_member_ranges_are_refused(text):
    with pytest.raises(ValueError, match="member range"):
        parse_member_range(text, 17)


def toy_step(x):
    return x + 0.3 * torch.tanh(x.roll(1, -1) * x.roll(-2, -2)) + 0.2 * x.roll(1, 1)  # couples channels


def test_hemispheric_rescale_hits_the_target_in_each_hemisphere_and_handles_zero_channels():
    dx = torch.randn(3, 3, 17, 32, generator=torch.Generator().manual_seed(0))
    dx[:, 2] = 0.0
    amplitude = torch.tensor([0.5, 2.0, 1.0])
    scaled = hemispheric_rescale(dx, amplitude, GRID)
    north, south = hemispheric_rms(scaled, GRID)
    assert torch.allclose(north[:, :2], amplitude[:2].expand(3, 2), rtol=1e-5)
    assert torch.allclose(south[:, :2], amplitude[:2].expand(3, 2), rtol=1e-5)
    assert torch.equal(scaled[:, 2], torch.zeros_like(scaled[:, 2]))


@pytest.mark.parametrize("ends", ["t", "t+6h"])
def test_bred_vectors_have_the_target_amplitude_and_depend_only_on_their_own_generator(ends):
    x = torch.randn(1, 3, 17, 32, generator=torch.Generator().manual_seed(1))
    history = torch.randn(3, 3, 17, 32, generator=torch.Generator().manual_seed(2))
    amplitude = torch.tensor([0.2, 0.1, 0.0])
    bred = BredVector(toy_step, GRID, amplitude, torch.tensor([1, 0, 0]), 1000.0, cycles=3,
                      last_cycle_ends=ends, history=history if ends == "t" else None)
    dx = bred(x, [torch.Generator().manual_seed(s) for s in (10, 11, 12, 13)])
    north, south = hemispheric_rms(dx, GRID)
    assert torch.allclose(north[:, :2], amplitude[:2].expand(4, 2), rtol=1e-4)
    assert torch.allclose(south[:, :2], amplitude[:2].expand(4, 2), rtol=1e-4)
    assert torch.equal(dx[:, 2], torch.zeros_like(dx[:, 2]))
    alone = bred(x, [torch.Generator().manual_seed(12)])
    assert torch.allclose(alone[0], dx[2], rtol=1e-5, atol=1e-7)


def test_spherical_gaussian_scales_each_channel():
    pert = SphericalGaussian(GRID, torch.tensor([1.0, 0.0]), 1000.0)
    dx = pert(torch.zeros(1, 2, 17, 32), [torch.Generator().manual_seed(i) for i in range(200)])
    assert abs(float(dx[:, 0].std()) - 1) < 0.1
    assert float(dx[:, 1].abs().max()) == 0.0


def test_bred_vectors_pass_each_cycles_valid_time_to_time_dependent_models():
    seen = []

    def timed_step(x, time):
        seen.append(time)
        return toy_step(x)

    times = [np.datetime64("2020-01-01T06"), np.datetime64("2020-01-01T12"), np.datetime64("2020-01-01T18")]
    history = torch.randn(3, 3, 17, 32, generator=torch.Generator().manual_seed(2))
    bred = BredVector(timed_step, GRID, torch.tensor([0.2, 0.1, 0.0]), torch.tensor([1, 0, 0]), 1000.0, cycles=3,
                      last_cycle_ends="t", history=history, times=times)
    bred(torch.zeros(1, 3, 17, 32), [torch.Generator().manual_seed(1)])
    assert seen == [t for t in times for _ in range(2)]  # control and perturbed step of each cycle
    with pytest.raises(ValueError, match="one valid time per breeding cycle"):
        BredVector(timed_step, GRID, torch.zeros(3), torch.tensor([1, 0, 0]), cycles=3, last_cycle_ends="t",
                   history=history, times=times[:2])
