"""The member plan: which checkpoint, perturbation and sign each member gets, and the batch layout.

Members are numbered checkpoint-major: with a control, member 0 is the unperturbed run of checkpoint 0;
then come ``members_per_checkpoint`` members of checkpoint 0, then of checkpoint 1, and so on. With
``perturbation="paired"`` consecutive members form a +/- pair around the analysis (bred vectors, HENS);
``"single"`` gives each member its own perturbation; ``"none"`` leaves initial states unperturbed
(ensembles from checkpoints or VAE latent noise alone).

The batch layout is fixed by the plan and the batch size, never by which members a rank was asked
for: the control is a block of its own, and each checkpoint's members are cut into blocks of
``batch_size`` from the start of the group. A member is always computed inside its own block, so it is
bit-identical whether it is run alone, with the whole ensemble, or on any rank.
"""

from __future__ import annotations

from dataclasses import dataclass

PERTURBATIONS = ("paired", "single", "none")


@dataclass(frozen=True)
class Member:
    index: int
    checkpoint: int
    pair: int  # perturbation index shared by a +/- pair; -1 when unperturbed
    sign: int  # +1 or -1 for perturbed members, 0 for unperturbed ones


@dataclass(frozen=True)
class MemberPlan:
    n_checkpoints: int
    members_per_checkpoint: int
    control: bool = True
    perturbation: str = "paired"

    def __post_init__(self):
        if self.n_checkpoints < 1:
            raise ValueError(f"n_checkpoints must be at least 1, got {self.n_checkpoints}")
        if self.members_per_checkpoint < 0 or (self.members_per_checkpoint == 0 and not self.control):
            raise ValueError(f"members_per_checkpoint must be positive, got {self.members_per_checkpoint}")
        if self.perturbation not in PERTURBATIONS:
            raise ValueError(f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}")
        if self.perturbation == "paired" and self.members_per_checkpoint % 2:
            raise ValueError(f"members_per_checkpoint must be even for +/- pairs, got {self.members_per_checkpoint}")

    @property
    def offset(self) -> int:
        return 1 if self.control else 0

    @property
    def size(self) -> int:
        return self.offset + self.n_checkpoints * self.members_per_checkpoint

    def member(self, index: int) -> Member:
        if not 0 <= index < self.size:
            raise ValueError(f"member {index} is outside the plan's {self.size} members")
        if self.control and index == 0:
            return Member(0, 0, -1, 0)
        checkpoint, local = divmod(index - self.offset, self.members_per_checkpoint)
        if self.perturbation == "paired":
            return Member(index, checkpoint, checkpoint * (self.members_per_checkpoint // 2) + local // 2, 1 - 2 * (local % 2))
        if self.perturbation == "single":
            return Member(index, checkpoint, checkpoint * self.members_per_checkpoint + local, 1)
        return Member(index, checkpoint, -1, 0)

    def members(self, start: int = 0, stop: int | None = None) -> list[Member]:
        stop = self.size if stop is None else stop
        return [self.member(i) for i in range(start, stop)]

    def blocks(self, batch_size: int) -> list[tuple[int, int]]:
        """All ``(start, stop)`` member blocks, in order; each block holds one checkpoint's members."""
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        if self.perturbation == "paired" and batch_size % 2:
            raise ValueError(f"batch_size must be even so the members of a +/- pair share a batch, got {batch_size}")
        blocks = [(0, 1)] if self.control else []
        for k in range(self.n_checkpoints):
            first = self.offset + k * self.members_per_checkpoint
            last = first + self.members_per_checkpoint
            blocks += [(s, min(s + batch_size, last)) for s in range(first, last, batch_size)]
        return blocks

    def blocks_for(self, start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
        """The blocks that hold any of the members ``start:stop``."""
        check_member_range(start, stop, self.size)
        return [(a, b) for a, b in self.blocks(batch_size) if a < stop and b > start]


def check_member_range(start: int, stop: int, size: int) -> None:
    if start < 0 or stop <= start or stop > size:
        raise ValueError(f"member range {start}:{stop} is empty, negative or beyond the ensemble's {size} members")


def parse_member_range(text: str, size: int) -> tuple[int, int]:
    """``"A:B"`` (either side may be omitted) as a checked ``(start, stop)``.

    >>> parse_member_range("5:6", 17)
    (5, 6)
    >>> parse_member_range(":", 17)
    (0, 17)
    """
    try:
        left, right = text.split(":")
        start = int(left) if left.strip() else 0
        stop = int(right) if right.strip() else size
    except ValueError:
        raise ValueError(f"member range {text!r} is not of the form A:B") from None
    check_member_range(start, stop, size)
    return start, stop
