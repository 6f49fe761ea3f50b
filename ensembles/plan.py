"""The member plan: which checkpoint, perturbation and sign each member gets, and the batch layout.

Members are numbered checkpoint-major: with a control, member 0 is the unperturbed run of checkpoint 0;
then come ``members_per_checkpoint`` members of checkpoint 0, then of checkpoint 1, and so on. With
``perturbation="paired"`` consecutive members form a +/- pair around the analysis (bred vectors, HENS);
``"single"`` gives each member its own perturbation; ``"none"`` leaves initial states unperturbed
(ensembles from checkpoints or VAE latent noise alone).

The batch layout is fixed by the plan and the batch size, never by which members a rank was asked
for. Members are cut into regular *windows* ``[k B, (k + 1) B)`` of ``B = batch_size`` members (the
store's shards follow them, and ranks take whole windows); a window that holds members of two
checkpoints is split into one *block* per checkpoint. A block is one batch through one network. A member
is always computed inside its own block, so it is bit-identical whether it is run alone, with the whole
ensemble, or on any rank. Perturbations are made in canonical groups of their own (see
``perturbation_groups``), so a +/- pair whose members fall in two blocks gets the same perturbation in both.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from forecast.errors import InputError, SettingError
from forecast.settings import at_least, is_number, one_of, positive

METHODS = ("bred_vector", "gaussian", "none")  # initial-condition perturbation methods
LAST_CYCLE_ENDS = ("t", "t+6h")  # where the last breeding cycle ends: at the start time or one step after

PERTURBATIONS = ("paired", "single", "none")


@dataclass(frozen=True)
class PerturbationSettings:
    """How initial states are perturbed; also the config section ``ensemble.perturbation`` (which adds
    ``amplitude_factor``). Checked here, and nowhere else, when built (:class:`forecast.errors.SettingError`
    naming the field). No torch: the config is read and checked before any heavy import.

    Parameters
    ----------
    method : str
        One of :data:`METHODS`: ``"bred_vector"`` (HENS), ``"gaussian"`` (spherically correlated noise) or ``"none"``.
    channels : tuple
        Channels the seed noise is drawn on (``z500`` in HENS).
    amplitude : dict
        Channel -> the bred vector's target amplitude, or the Gaussian noise's standard deviation, in physical
        units; channels not named get none.
    length_scale_km : float
        Correlation length of the spherical seed noise.
    cycles : int
        Breeding cycles (bred vectors).
    boundary_latitude : float
        Hemispheric rescaling poleward of this latitude, blended linearly across the tropics (degrees).
    last_cycle_ends : str
        ``"t"``: the last cycle ends at the start time; ``"t+6h"``: one model step after it.
    """

    method: str = "bred_vector"
    channels: tuple = ("z500",)
    amplitude: dict = field(default_factory=dict)
    length_scale_km: float = 500.0
    cycles: int = 3
    boundary_latitude: float = 20.0
    last_cycle_ends: str = "t"

    def __post_init__(self):
        one_of(self.method, METHODS, "method")
        object.__setattr__(self, "channels", tuple(self.channels))
        if self.method == "bred_vector":
            at_least(self.cycles, 1, "cycles")
        if self.method != "none":
            positive(self.length_scale_km, "length_scale_km")
        for channel, value in self.amplitude.items():
            if not is_number(value) or not value >= 0:
                raise SettingError(f"amplitude.{channel}", f"must be a non-negative number, got {value!r}")
        if not 0 <= self.boundary_latitude < 90:
            raise SettingError("boundary_latitude", f"must lie in [0, 90) degrees, got {self.boundary_latitude}")
        one_of(self.last_cycle_ends, LAST_CYCLE_ENDS, "last_cycle_ends")


@dataclass(frozen=True)
class Member:
    """One member's identity: its index, checkpoint, perturbation pair (-1: none) and sign."""

    index: int
    checkpoint: int
    pair: int  # perturbation index shared by a +/- pair; -1 when unperturbed
    sign: int  # +1 or -1 for perturbed members, 0 for unperturbed ones


@dataclass(frozen=True)
class MemberPlan:
    """Which checkpoint and perturbation every member of the ensemble gets.

    Member 0 is the unperturbed control (when ``control``), then ``members_per_checkpoint`` members of
    checkpoint 0, then of checkpoint 1, ...; with ``perturbation="paired"`` consecutive members form +/-
    pairs of one perturbation.

    Parameters
    ----------
    n_checkpoints : int
        Number of checkpoints (at least 1).
    members_per_checkpoint : int
        Members per checkpoint; even for +/- pairs.
    control : bool
        Whether member 0 is the unperturbed control.
    perturbation : str
        One of ``PERTURBATIONS`` (``"paired"``: +/- pairs; ``"none"``: no initial perturbation).

    Examples
    --------
    >>> plan = MemberPlan(2, 4)
    >>> plan.size, plan.member(1).checkpoint, plan.member(5).checkpoint
    (9, 0, 1)
    """

    n_checkpoints: int
    members_per_checkpoint: int
    control: bool = True
    perturbation: str = "paired"

    def __post_init__(self):
        if self.n_checkpoints < 1:
            raise InputError(f"n_checkpoints must be at least 1, got {self.n_checkpoints}")
        if self.members_per_checkpoint < 0 or (self.members_per_checkpoint == 0 and not self.control):
            raise InputError(f"members_per_checkpoint must be positive, got {self.members_per_checkpoint}")
        if self.perturbation not in PERTURBATIONS:
            raise InputError(f"perturbation must be one of {PERTURBATIONS}, got {self.perturbation!r}")
        if self.perturbation == "paired" and self.members_per_checkpoint % 2:
            raise InputError(f"members_per_checkpoint must be even for +/- pairs, got {self.members_per_checkpoint}")

    @property
    def offset(self) -> int:
        """1 when member 0 is the control, else 0."""
        return 1 if self.control else 0

    @property
    def size(self) -> int:
        """Number of members."""
        return self.offset + self.n_checkpoints * self.members_per_checkpoint

    def member(self, index: int) -> Member:
        """Member ``index``'s checkpoint, pair and sign."""
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
        """Members ``start:stop``."""
        stop = self.size if stop is None else stop
        return [self.member(i) for i in range(start, stop)]

    def windows(self, batch_size: int) -> list[tuple[int, int]]:
        """The regular ``(start, stop)`` windows of ``batch_size`` members (the last may be short)."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return [(s, min(s + batch_size, self.size)) for s in range(0, self.size, batch_size)]

    def blocks(self, batch_size: int) -> list[tuple[int, int]]:
        """All ``(start, stop)`` blocks in order: the windows, split where the checkpoint changes."""
        blocks = []
        for start, stop in self.windows(batch_size):
            first = start
            for index in range(start + 1, stop):
                if self.member(index).checkpoint != self.member(index - 1).checkpoint:
                    blocks.append((first, index))
                    first = index
            blocks.append((first, stop))
        return blocks

    def n_windows(self, batch_size: int) -> int:
        """``len(self.windows(batch_size))`` without listing them."""
        if batch_size < 1:
            raise InputError(f"batch_size must be at least 1, got {batch_size}")
        return -(-self.size // batch_size)

    def n_blocks(self, batch_size: int) -> int:
        """``len(self.blocks(batch_size))`` without listing them (a dry run of a billion members is instant).

        Every window is one block, plus one for each checkpoint boundary inside a window (not on its edge).

        >>> plan = MemberPlan(3, 4)
        >>> plan.n_blocks(3) == len(plan.blocks(3)), plan.n_blocks(3)
        (True, 6)
        """
        windows = self.n_windows(batch_size)
        if self.members_per_checkpoint == 0:  # the control alone
            return windows
        # checkpoint c starts at offset + c * members_per_checkpoint; count the starts that are not window edges
        boundaries = range(self.offset + self.members_per_checkpoint, self.size, self.members_per_checkpoint)
        return windows + sum(1 for b in boundaries if b % batch_size)

    def blocks_for(self, start: int, stop: int, batch_size: int) -> list[tuple[int, int]]:
        """The blocks that hold any of the members ``start:stop``."""
        check_member_range(start, stop, self.size)
        return [(a, b) for a, b in self.blocks(batch_size) if a < stop and b > start]

    def perturbation_groups(self, perturbations: list[int], batch_size: int) -> list[list[int]]:
        """Canonical groups of perturbation indices covering ``perturbations``: groups of
        ``max(1, batch_size // 2)`` consecutive indices, always computed together in one batch."""
        size = max(1, batch_size // 2) if self.perturbation == "paired" else batch_size
        groups = sorted({p // size for p in perturbations if p >= 0})
        total = self.n_perturbations()
        return [list(range(g * size, min((g + 1) * size, total))) for g in groups]

    def n_perturbations(self) -> int:
        """Number of distinct perturbations (pairs share one)."""
        if self.perturbation == "paired":
            return self.n_checkpoints * self.members_per_checkpoint // 2
        if self.perturbation == "single":
            return self.n_checkpoints * self.members_per_checkpoint
        return 0


def check_member_range(start: int, stop: int, size: int, what: str = "member") -> None:
    """Raise ``ValueError`` unless ``start:stop`` is a non-empty range within ``size``."""
    if start < 0 or stop <= start or stop > size:
        raise InputError(f"{what} range {start}:{stop} is empty, negative or beyond the {size} {what}s")


def parse_member_range(text: str, size: int, what: str = "member") -> tuple[int, int]:
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
        raise InputError(f"{what} range {text!r} is not of the form A:B") from None
    check_member_range(start, stop, size, what)
    return start, stop
