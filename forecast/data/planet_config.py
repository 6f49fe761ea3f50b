"""The planet's settings (``forecast.data.planet``), without torch: ``planet.settings`` in a config is this
class, checked when the config is read (``--dry-run`` included) before anything heavy is imported."""

from __future__ import annotations

from dataclasses import dataclass, field

from forecast.errors import SettingError
from forecast.grid import Grid
from forecast.settings import is_number, positive

CHANNELS = ("z500", "u500", "v500", "tcwv")


@dataclass(frozen=True)
class PlanetConfig:
    """Everything that defines a planet's climate and its nature run (see ``forecast.data.planet``).

    Grid and solver sizes, time steps and the truncation must be positive; ``mountains`` are
    ``(latitude, longitude, height_m, width_deg)``; ``stirring_band`` is the band ``(low, high)`` of total
    wavenumbers stirred. A field that cannot be used is a :class:`forecast.errors.SettingError` naming it.

    >>> PlanetConfig(nlat=17, nlon=32).grid.shape
    (17, 32)
    >>> PlanetConfig(mountains=[[40, 100]])
    Traceback (most recent call last):
    forecast.errors.SettingError: mountains[0] must be [latitude, longitude, height_m, width_deg], got [40, 100]
    """

    nlat: int = 33
    nlon: int = 64
    solver_nlat: int = 32
    solver_nlon: int = 64
    truncation: int = 21
    solver_dt: float = 1800.0
    output_hours: int = 6
    mean_depth: float = 5500.0
    jet_depth_contrast: float = 1500.0
    jet_latitude: float = 42.0
    jet_width: float = 6.0
    mountains: tuple = ((40.0, 100.0, 1500.0, 12.0), (45.0, 250.0, 1200.0, 9.0), (-40.0, 290.0, 800.0, 7.0))
    stirring_amplitude: float = 2e-10
    stirring_days: float = 2.0
    stirring_band: tuple = (6, 16)
    stirring_latitude: float = 45.0
    stirring_width: float = 15.0
    relaxation_days: float = 3.0
    drag_days: float = 30.0
    moisture_days: float = 4.0
    moisture_tropics: float = 45.0
    moisture_width: float = 22.0
    hyperdiffusion_hours: float = 3.0
    obs_error_std: dict = field(default_factory=lambda: {"z500": 150.0, "u500": 1.0, "v500": 1.0, "tcwv": 1.0})
    obs_error_length_km: float = 500.0

    def __post_init__(self):
        for key in ("nlat", "nlon", "solver_nlat", "solver_nlon", "truncation", "output_hours", "solver_dt"):
            positive(getattr(self, key), key)
        for k, mountain in enumerate(self.mountains):
            if not (isinstance(mountain, (list, tuple)) and len(mountain) == 4 and all(map(is_number, mountain))):
                raise SettingError(f"mountains[{k}]", f"must be [latitude, longitude, height_m, width_deg], got {mountain!r}")
        band = self.stirring_band
        if not (len(band) == 2 and all(isinstance(v, int) and not isinstance(v, bool) for v in band) and 0 < band[0] <= band[1]):
            raise SettingError("stirring_band", f"must be two wavenumbers [low, high], got {list(band)}")
        object.__setattr__(self, "mountains", tuple(tuple(m) for m in self.mountains))
        object.__setattr__(self, "stirring_band", tuple(band))

    @property
    def grid(self) -> Grid:
        """The output grid (equiangular ``nlat`` x ``nlon``)."""
        return Grid(self.nlat, self.nlon)
