"""The model card: everything needed to rebuild and use a checkpoint, stored as JSON beside its weights."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields

from forecast.errors import InputError
from forecast.grid import Grid
from forecast.settings import is_number

FORMAT_VERSION = 1
FAMILIES = ("sfno", "vae")


@dataclass(frozen=True)
class ModelCard:
    """Channels, grid, time step, normalisation statistics and hyper-parameters of one checkpoint.

    ``mean``/``std`` normalise each channel; ``architecture`` holds the network's hyper-parameters
    (``SFNOConfig`` fields for SFNO); ``weights_sha256`` is checked when the weights are loaded.
    """

    family: str
    channels: tuple
    grid: dict
    dt_hours: int
    mean: tuple
    std: tuple
    architecture: dict
    name: str = ""
    seed: int = 0
    training: dict = field(default_factory=dict)
    weights_sha256: str = ""
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        object.__setattr__(self, "channels", tuple(self.channels))
        for key in ("mean", "std"):
            values = getattr(self, key)
            if isinstance(values, (str, bytes, dict)) or not hasattr(values, "__iter__") \
                    or not all(is_number(v) and math.isfinite(v) for v in values):
                raise InputError(f"card {key} must be finite numbers, one per channel, got {values!r}")
            object.__setattr__(self, key, tuple(float(v) for v in values))
        if self.family not in FAMILIES:
            raise InputError(f"unknown model family {self.family!r}; expected one of {FAMILIES}")
        n = len(self.channels)
        if n == 0 or len(set(self.channels)) != n:
            raise InputError(f"card channels must be non-empty and distinct, got {self.channels}")
        if len(self.mean) != n or len(self.std) != n:
            raise InputError(f"card has {n} channels but {len(self.mean)} means and {len(self.std)} stds")
        if any(not s > 0 for s in self.std):
            raise InputError(f"card normalisation std must be positive, got {self.std}")
        if not is_number(self.dt_hours) or not self.dt_hours > 0:
            raise InputError(f"card dt_hours must be positive, got {self.dt_hours}")
        Grid.from_dict(self.grid)

    @property
    def model_grid(self) -> Grid:
        """The model's grid as a :class:`forecast.grid.Grid`."""
        return Grid.from_dict(self.grid)

    def to_json(self) -> str:
        """The card as sorted, indented JSON (``card.json``)."""
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str, source: str = "card") -> "ModelCard":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as error:
            raise InputError(f"{source} is not valid JSON: {error}") from None
        if not isinstance(data, dict):
            raise InputError(f"{source} must hold a JSON object")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"{source} has unknown keys {unknown}")
        try:
            card = cls(**data)
        except TypeError as error:
            raise InputError(f"{source} is incomplete: {error}") from None
        except InputError as error:
            raise InputError(f"{source}: {error}") from None
        if card.format_version != FORMAT_VERSION:
            raise InputError(f"{source} has format_version {card.format_version}; this code reads {FORMAT_VERSION}")
        return card
