"""Extra (unpredicted) inputs of an SFNO, appended to the state channels as makani v0.1.0 does.

makani's preprocessor and model wrapper append, after the normalised state channels and in this order:

1. ``cos_zenith``: the cosine of the solar zenith angle at the *valid time of the input state*
   (``models.solar``), unnormalised. The model needs that time at every step. ``"cos_zenith": true``
   computes it in float64 (``models.solar.cos_zenith``); ``"cos_zenith": "makani-float32"`` reproduces
   makani's float32 arithmetic bit for bit (``models.solar.cos_zenith_float32``), the values makani's
   checkpoints were trained on (the default for imported makani packages, ``docs/makani.md``).
2. grid features (``add_grid``): the two coordinates ``(y, x)`` of each point, either in [0, 1)
   (``coordinates="unit"``: ``linspace(0, 1, n + 1)[:-1]``, makani's default) or as latitude and longitude
   in radians (``"radians"``, when the package's ``config.json`` carries ``lat``/``lon``); with
   ``kind="sinusoidal"`` they become ``sin(k y), sin(k x)`` for ``k = 1..frequencies`` (interleaved), with
   ``kind="linear"`` they are used as they are.
3. static fields (``add_orography``, ``add_landmask``): stored with the weights as the buffer
   ``static``, already in the form the network sees (orography standardised, the land-sea mask
   one-hot encoded). Their names are listed in ``static``.

The specification lives in the card's architecture as a plain dict, e.g.
``{"cos_zenith": true, "grid": {"kind": "sinusoidal", "frequencies": 16, "coordinates": "unit"},
"static": ["orography", "land_sea_mask_0", "land_sea_mask_1"]}``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from forecast.errors import InputError
from forecast.grid import Grid

GRID_KINDS = ("sinusoidal", "linear")
GRID_COORDINATES = ("unit", "radians")
#: how the cosine of the solar zenith angle is computed: ours in float64, or makani v0.1.0's float32 arithmetic
COS_ZENITH_ARITHMETIC = ("float64", "makani-float32")


@dataclass(frozen=True)
class ExtraInputSpec:
    """Which extra inputs a network takes; ``from_dict`` validates a card's ``extra_inputs`` entry.

    >>> spec = ExtraInputSpec.from_dict({"cos_zenith": True, "grid": {"kind": "sinusoidal", "frequencies": 2}})
    >>> spec.count, spec.names
    (5, ('cos_zenith', 'grid_sin1_y', 'grid_sin1_x', 'grid_sin2_y', 'grid_sin2_x'))
    """

    cos_zenith: bool = False
    grid_kind: str = ""
    grid_frequencies: int = 0
    grid_coordinates: str = "unit"
    static: tuple = ()
    cos_zenith_arithmetic: str = "float64"

    @classmethod
    def from_dict(cls, d: dict | None) -> "ExtraInputSpec":
        d = dict(d or {})
        unknown = set(d) - {"cos_zenith", "grid", "static"}
        if unknown:
            raise InputError(f"unknown extra inputs {sorted(unknown)}; known: cos_zenith, grid, static")
        grid = d.get("grid") or {}
        unknown = set(grid) - {"kind", "frequencies", "coordinates"}
        if unknown:
            raise InputError(f"unknown grid-feature settings {sorted(unknown)}; known: kind, frequencies, coordinates")
        kind = str(grid.get("kind", "")) if grid else ""
        if grid and kind not in GRID_KINDS:
            raise InputError(f"grid feature kind must be one of {GRID_KINDS}, got {kind!r}")
        frequencies = int(grid.get("frequencies", 1 if kind == "sinusoidal" else 0)) if grid else 0
        if kind == "sinusoidal" and frequencies < 1:
            raise InputError(f"sinusoidal grid features need at least 1 frequency, got {frequencies}")
        coordinates = str(grid.get("coordinates", "unit"))
        if coordinates not in GRID_COORDINATES:
            raise InputError(f"grid feature coordinates must be one of {GRID_COORDINATES}, got {coordinates!r}")
        static = tuple(str(s) for s in d.get("static", ()))
        if len(set(static)) != len(static):
            raise InputError(f"static input names must be distinct, got {static}")
        zenith = d.get("cos_zenith", False)
        arithmetic = "float64"
        if isinstance(zenith, str):
            if zenith not in COS_ZENITH_ARITHMETIC:
                raise InputError(f"cos_zenith must be true, false or one of {COS_ZENITH_ARITHMETIC}, got {zenith!r}")
            zenith, arithmetic = True, zenith
        return cls(bool(zenith), kind, frequencies, coordinates, static, arithmetic)

    def to_dict(self) -> dict:
        out: dict = {}
        if self.cos_zenith:
            out["cos_zenith"] = True if self.cos_zenith_arithmetic == "float64" else self.cos_zenith_arithmetic
        if self.grid_kind:
            out["grid"] = {"kind": self.grid_kind, "frequencies": self.grid_frequencies,
                           "coordinates": self.grid_coordinates}
        if self.static:
            out["static"] = list(self.static)
        return out

    @property
    def grid_names(self) -> tuple[str, ...]:
        if self.grid_kind == "linear":
            return ("grid_y", "grid_x")
        if self.grid_kind == "sinusoidal":
            return tuple(f"grid_sin{k}_{axis}" for k in range(1, self.grid_frequencies + 1) for axis in ("y", "x"))
        return ()

    @property
    def names(self) -> tuple[str, ...]:
        """The extra channels in the order they follow the state channels."""
        return (("cos_zenith",) if self.cos_zenith else ()) + self.grid_names + self.static

    @property
    def count(self) -> int:
        return len(self.names)


def grid_features(spec: ExtraInputSpec, grid: Grid) -> torch.Tensor:
    """The grid features ``(1, 2 * frequencies or 2, nlat, nlon)`` (float32) as makani v0.1.0 builds them."""
    if not spec.grid_kind:
        return torch.zeros(1, 0, grid.nlat, grid.nlon)
    if spec.grid_coordinates == "unit":
        y = torch.linspace(0, 1, grid.nlat + 1, dtype=torch.float32)[:-1]
        x = torch.linspace(0, 1, grid.nlon + 1, dtype=torch.float32)[:-1]
    else:
        y = torch.deg2rad(torch.tensor(grid.lat, dtype=torch.float32))
        x = torch.deg2rad(torch.tensor(grid.lon, dtype=torch.float32))
    yy, xx = torch.meshgrid(y, x, indexing="ij")
    coords = torch.stack([yy, xx])[None]  # (1, 2, nlat, nlon)
    if spec.grid_kind == "linear":
        return coords
    return torch.cat([torch.sin(k * coords) for k in range(1, spec.grid_frequencies + 1)], dim=1)


def as_datetime64(time, batch: int) -> np.ndarray:
    """``time`` (a datetime64, datetime, ISO string or a sequence of them) as ``datetime64[ns]`` of length 1 or
    ``batch``."""
    times = np.atleast_1d(np.asarray(time, dtype="datetime64[ns]"))
    if times.ndim != 1 or len(times) not in (1, batch):
        raise ValueError(f"time must be one valid time or one per batch row ({batch}), got shape {times.shape}")
    if np.isnat(times).any():
        raise ValueError("time holds NaT; every input state needs its valid time")
    return times


class ExtraInputs(nn.Module):
    """Appends the extra inputs of ``spec`` to ``(batch, channel, lat, lon)`` states on ``grid``."""

    def __init__(self, spec: ExtraInputSpec, grid: Grid):
        super().__init__()
        self.spec = spec
        self.lat, self.lon = grid.lat, grid.lon
        self.register_buffer("grid", grid_features(spec, grid), persistent=False)
        if spec.static:
            self.register_buffer("static", torch.zeros(1, len(spec.static), grid.nlat, grid.nlon))

    def cos_zenith(self, time, batch: int, device, dtype) -> torch.Tensor:
        from models.solar import cos_zenith, cos_zenith_float32

        times = as_datetime64(time, batch)
        unique, inverse = np.unique(times, return_inverse=True)
        formula = cos_zenith_float32 if self.spec.cos_zenith_arithmetic == "makani-float32" else cos_zenith
        fields = torch.from_numpy(formula(unique, self.lat, self.lon).astype(np.float32))
        return fields[torch.from_numpy(inverse.reshape(-1))].unsqueeze(1).to(device=device, dtype=dtype)

    def forward(self, x: torch.Tensor, time=None) -> torch.Tensor:
        batch = x.shape[0]
        parts = [x]
        if self.spec.cos_zenith:
            if time is None:
                raise ValueError("this model takes the cosine of the solar zenith angle as an input: pass the valid "
                                 "time of the input state, step(x, generator, time=...)")
            parts.append(self.cos_zenith(time, batch, x.device, x.dtype).expand(batch, -1, -1, -1))
        if self.spec.grid_kind:
            parts.append(self.grid.to(x.dtype).expand(batch, -1, -1, -1))
        if self.spec.static:
            parts.append(self.static.to(x.dtype).expand(batch, -1, -1, -1))
        return torch.cat(parts, dim=1)
