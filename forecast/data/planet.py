"""The embedded world: a forced, dissipative shallow-water planet whose nature run is the truth.

The single fluid layer stands in for the mid-troposphere (an equivalent-barotropic 500 hPa), so its
channels carry the names of the real ones: ``z500`` (geopotential of the free surface, m2 s-2),
``u500``/``v500`` (wind, m s-1) and ``tcwv`` (a moisture-like tracer, kg m-2, never negative).

Dynamics: torch-harmonics' ``ShallowWaterSolver`` transforms in vorticity-divergence form, stepped
semi-implicitly (Adams-Bashforth 3 for advection, Crank-Nicolson for gravity waves, implicit
hyperdiffusion), plus forcing and dissipation so the climate is stationary:

* the zonal-mean geopotential relaxes over ``relaxation_days`` to an equilibrium with a mid-latitude
  step in each hemisphere, which drives barotropically unstable westerly jets (relaxing only the zonal
  mean leaves the eddies free);
* Gaussian mountains (``mountains``: latitude, longitude, height in m, width in degrees; more in the
  north than the south) enter the mass flux and give the climate stationary waves;
* Rayleigh drag on vorticity and divergence over ``drag_days``;
* stochastic stirring of mid-latitude vorticity (band-limited in total wavenumber, AR(1) in time with
  memory ``stirring_days``, refreshed every output step from the run's generator) standing in for the
  baroclinic eddies a single layer cannot make. It is what makes the weather unpredictable: forecast
  errors grow from about 30 m of z500 RMS at day 1 to saturation (about 240 m) after 10-12 days;
* the tracer is carried in flux form and relaxes to a moist-tropics profile over ``moisture_days``.

Forecasts start from *analyses*: truth plus observation error, a spatially correlated Gaussian field
(``SphericalNoise``, length ``obs_error_length_km``) with a per-channel standard deviation
``obs_error_std``, drawn from a generator seeded by the analysis time, so analyses are reproducible.
The solver runs on a Gauss grid (T21 on 32x64 by default, 30-minute steps); output fields are its spectral state
truncated to what the equiangular output grid resolves and synthesised there.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import torch

from forecast.data.planet_config import CHANNELS, PlanetConfig  # noqa: F401  (re-exported)
from forecast.errors import InputError
from forecast.grid import Grid
from forecast.hashing import derived_seed

log = logging.getLogger(__name__)

GRAVITY = 9.80616
HOUR = 3600.0
DAY = 86400.0


class PlanetSolver(torch.nn.Module):
    """Forced shallow-water model; state is spectral ``(..., 4, l, m)``: geopotential, vorticity,
    divergence, tracer."""

    def __init__(self, config: PlanetConfig):
        super().__init__()
        from torch_harmonics import InverseRealSHT, InverseRealVectorSHT
        from torch_harmonics.examples import ShallowWaterSolver

        self.config = c = config
        if c.truncation > c.solver_nlat or c.truncation > c.solver_nlon // 2:
            raise InputError(f"truncation {c.truncation} too high for a {c.solver_nlat}x{c.solver_nlon} Gauss solver grid")
        out_lmax = min(c.truncation, (c.nlat + 1) // 2, c.nlon // 2)
        self.swe = ShallowWaterSolver(
            c.solver_nlat, c.solver_nlon, c.solver_dt, lmax=c.truncation, mmax=c.truncation,
            grid="legendre-gauss", havg=c.mean_depth,
        ).to(torch.float64)
        self.out_lmax = out_lmax
        self.out_isht = InverseRealSHT(c.nlat, c.nlon, lmax=out_lmax, mmax=out_lmax, grid="equiangular", csphase=False).to(torch.float64)
        self.out_ivsht = InverseRealVectorSHT(c.nlat, c.nlon, lmax=out_lmax, mmax=out_lmax, grid="equiangular", csphase=False).to(torch.float64)

        lat = self.swe.lats.reshape(-1, 1)  # radians, north to south
        lon = self.swe.lons.reshape(1, -1)
        abslat = torch.abs(torch.rad2deg(lat))
        step = -0.5 * c.jet_depth_contrast * torch.tanh((abslat - c.jet_latitude) / c.jet_width)
        phi_eq = GRAVITY * (c.mean_depth + step) + 0.0 * lon
        orography = torch.zeros_like(phi_eq)
        for lat0, lon0, height, width in c.mountains:
            distance = torch.arccos(torch.clamp(
                torch.sin(lat) * math.sin(math.radians(lat0))
                + torch.cos(lat) * math.cos(math.radians(lat0)) * torch.cos(lon - math.radians(lon0)), -1.0, 1.0))
            orography = orography + height * torch.exp(-((torch.rad2deg(distance) / width) ** 2))
        self.register_buffer("surface_geopotential", GRAVITY * orography)
        q_eq = c.moisture_tropics * torch.exp(-((torch.rad2deg(lat) / c.moisture_width) ** 2)) + 0.0 * lon
        self.register_buffer("phi_eq", self.swe.grid2spec(phi_eq))
        self.register_buffer("q_eq", self.swe.grid2spec(q_eq))
        lap = self.swe.lap
        hyperdiff = torch.exp(-(c.solver_dt / (c.hyperdiffusion_hours * HOUR)) * (lap / lap[-1, 0]) ** 4)
        self.register_buffer("hyperdiff", hyperdiff)
        self.register_buffer("zonal", (torch.arange(self.swe.mmax) == 0).to(torch.float64))
        self.mean_geopotential = GRAVITY * c.mean_depth
        self._history: list[torch.Tensor] = []
        degree = torch.arange(self.swe.lmax).reshape(-1, 1)
        band = ((degree >= c.stirring_band[0]) & (degree <= c.stirring_band[1])).expand(-1, self.swe.mmax)
        band_variance = sum((2 * l + 1) / (4 * math.pi) for l in range(c.stirring_band[0], c.stirring_band[1] + 1))
        self.register_buffer("stirring_band", torch.tril(band).to(torch.float64) / math.sqrt(band_variance))
        envelope = torch.exp(-(((abslat - c.stirring_latitude) / c.stirring_width) ** 2))
        self.register_buffer("stirring_envelope", envelope)
        self.stirring = torch.zeros((self.swe.lmax, self.swe.mmax), dtype=torch.complex128)

    def stir(self, generator: torch.Generator, interval: float) -> None:
        """Advance the stochastic vorticity forcing by ``interval`` seconds (AR(1), memory
        ``stirring_days``): mid-latitude, band-limited, isotropic within the band, drawn from ``generator``."""
        c = self.config
        shape = self.stirring_band.shape
        draws = torch.randn((*shape, 2), generator=generator, dtype=torch.float64)
        m = torch.arange(shape[1])
        scale = torch.where(m > 0, math.sqrt(0.5), 1.0) * self.stirring_band
        white = torch.complex(draws[..., 0] * scale, draws[..., 1] * scale * (m > 0))
        fresh = self.swe.grid2spec(self.stirring_envelope * self.swe.spec2grid(white)) * c.stirring_amplitude
        r = math.exp(-interval / (c.stirring_days * DAY))
        self.stirring = r * self.stirring + math.sqrt(1 - r * r) * fresh

    # -- dynamics ---------------------------------------------------------------------------------
    def explicit_tendency(self, spec: torch.Tensor) -> torch.Tensor:
        """All tendencies except the linear gravity-wave terms, which ``advance`` treats implicitly."""
        c, swe = self.config, self.swe
        grids = swe.isht(spec[..., (0, 1, 3), :, :])  # geopotential, vorticity, tracer
        phi, vrt, q = grids[..., 0, :, :], grids[..., 1, :, :], grids[..., 2, :, :]
        uv = swe.getuv(spec[..., 1:3, :, :])
        thickness = phi - self.surface_geopotential
        fluxes = torch.stack([uv * (vrt + swe.coriolis).unsqueeze(-3), uv * thickness.unsqueeze(-3), uv * q.unsqueeze(-3)], dim=-4)
        curl_div = swe.vrtdivspec(fluxes)  # (..., 3 fluxes, curl/div, l, m)
        energy = swe.grid2spec(0.5 * (uv[..., 0, :, :] ** 2 + uv[..., 1, :, :] ** 2))
        drag = 1.0 / (c.drag_days * DAY)
        perturbation_flux_div = curl_div[..., 1, 1, :, :] - self.mean_geopotential * spec[..., 2, :, :]
        dphi = -perturbation_flux_div + self.zonal * (self.phi_eq - spec[..., 0, :, :]) / (c.relaxation_days * DAY)
        dvrt = -curl_div[..., 0, 1, :, :] - drag * spec[..., 1, :, :] + self.stirring
        ddiv = curl_div[..., 0, 0, :, :] - swe.lap * energy - drag * spec[..., 2, :, :]
        dq = -curl_div[..., 2, 1, :, :] + (self.q_eq - spec[..., 3, :, :]) / (c.moisture_days * DAY)
        return torch.stack([dphi, dvrt, ddiv, dq], dim=-3)

    def advance(self, spec: torch.Tensor, nsteps: int) -> torch.Tensor:
        """Integrate ``nsteps`` solver steps: third-order Adams-Bashforth (started with Euler and
        AB2) for the explicit terms, Crank-Nicolson for the gravity-wave terms
        ``d(div)/dt = -lap(phi)``, ``d(phi)/dt = -mean_phi div``, then implicit hyperdiffusion."""
        dt = self.config.solver_dt
        a = 0.5 * dt
        lam = -self.swe.lap  # l (l + 1) / R^2
        gbar = self.mean_geopotential
        for _ in range(nsteps):
            self._history = [self.explicit_tendency(spec)] + self._history[:2]
            h = self._history
            if len(h) == 1:
                rate = h[0]
            elif len(h) == 2:
                rate = 1.5 * h[0] - 0.5 * h[1]
            else:
                rate = (23.0 * h[0] - 16.0 * h[1] + 5.0 * h[2]) / 12.0
            phi0, div0 = spec[..., 0, :, :], spec[..., 2, :, :]
            r_div = div0 + dt * rate[..., 2, :, :] + a * lam * phi0
            r_phi = phi0 + dt * rate[..., 0, :, :] - a * gbar * div0
            div1 = (r_div + a * lam * r_phi) / (1.0 + a * a * lam * gbar)
            phi1 = r_phi - a * gbar * div1
            vrt1 = spec[..., 1, :, :] + dt * rate[..., 1, :, :]
            q1 = spec[..., 3, :, :] + dt * rate[..., 3, :, :]
            spec = self.hyperdiff * torch.stack([phi1, vrt1, div1, q1], dim=-3)
        return spec

    def initial_state(self, generator: torch.Generator) -> torch.Tensor:
        """Equilibrium geopotential and tracer at rest plus a small random bump that starts the eddies."""
        swe = self.swe
        noise = torch.randn((self.config.solver_nlat, self.config.solver_nlon), generator=generator, dtype=torch.float64)
        phi = swe.spec2grid(self.phi_eq) + GRAVITY * 5.0 * noise
        spec = torch.zeros((4, swe.lmax, swe.mmax), dtype=self.phi_eq.dtype)
        spec[0] = swe.grid2spec(phi)
        spec[3] = self.q_eq
        self._history = []
        return torch.tril(spec)

    def to_output_grid(self, spec: torch.Tensor) -> torch.Tensor:
        """Channels ``(4, nlat, nlon)`` on the output grid from a spectral state."""
        lmax = self.out_lmax
        spec = spec[..., :lmax, :lmax]
        phi = self.out_isht(spec[..., 0, :, :])
        radius = self.swe.radius
        invlap = self.swe.invlap[:lmax, :lmax]
        uv = self.out_ivsht(invlap * spec[..., 1:3, :, :] / radius)
        q = torch.clamp(self.out_isht(spec[..., 3, :, :]), min=0.0)
        return torch.stack([phi, uv[..., 0, :, :], uv[..., 1, :, :], q], dim=-3)


def nature_run(config: PlanetConfig, start: np.datetime64, n_times: int, spinup_days: float = 200.0, seed: int = 0):
    """The truth: ``n_times`` six-hourly states from ``start`` after ``spinup_days`` of spin-up.

    Returns an ``xarray.Dataset`` with dims ``time, lat, lon``, one float32 variable per channel.
    """
    torch.set_default_dtype(torch.float32)
    solver = PlanetSolver(config)
    generator = torch.Generator().manual_seed(seed)
    steps_per_output = round(config.output_hours * HOUR / config.solver_dt)
    if abs(steps_per_output * config.solver_dt - config.output_hours * HOUR) > 1e-6:
        raise InputError(f"solver_dt {config.solver_dt} s does not divide the {config.output_hours} h output step")
    with torch.no_grad():
        spec = solver.initial_state(generator)
        interval = config.output_hours * HOUR
        for _ in range(round(spinup_days * DAY / interval)):
            solver.stir(generator, interval)
            spec = solver.advance(spec, steps_per_output)
        fields = np.empty((n_times, len(CHANNELS), config.nlat, config.nlon), dtype=np.float32)
        for i in range(n_times):
            if i:
                solver.stir(generator, interval)
                spec = solver.advance(spec, steps_per_output)
            out = solver.to_output_grid(spec)
            if not torch.isfinite(out).all():
                raise FloatingPointError(f"planet blew up at output {i}; lower solver_dt ({config.solver_dt} s)")
            fields[i] = out.numpy()
    times = np.datetime64(start, "ns") + np.arange(n_times) * np.timedelta64(config.output_hours, "h")
    return to_dataset(fields, times, config.grid)


def to_dataset(fields: np.ndarray, times: np.ndarray, grid: Grid, channels=CHANNELS):
    """Fields ``(time, channel, lat, lon)`` as a dataset in the system's layout (one variable per channel,
    CF attributes)."""
    import xarray as xr

    from forecast.channels import channel_attrs

    coords = {
        "time": ("time", times),
        "lat": ("lat", grid.lat, {"units": "degrees_north", "standard_name": "latitude"}),
        "lon": ("lon", grid.lon, {"units": "degrees_east", "standard_name": "longitude"}),
    }
    data = {
        name: (("time", "lat", "lon"), fields[:, k], channel_attrs(name))
        for k, name in enumerate(channels)
    }
    return xr.Dataset(data, coords=coords)


def time_seed(seed: int, time: np.datetime64) -> int:
    """A 63-bit seed from a base seed and a time stamp (for observation error draws)."""
    return derived_seed(seed, np.datetime_as_string(np.datetime64(time, 's')))


def analyses(truth, config: PlanetConfig, seed: int = 1):
    """Truth plus observation error (see the module docstring); same layout as ``truth``."""
    from forecast.random_fields import SphericalNoise

    noise = SphericalNoise(config.grid, config.obs_error_length_km)
    out = truth.copy(deep=True)
    channels = [c for c in CHANNELS if c in truth]
    std = torch.tensor([config.obs_error_std.get(c, 0.0) for c in channels]).reshape(-1, 1, 1)
    for i, time in enumerate(truth.time.values):
        generator = torch.Generator().manual_seed(time_seed(seed, time))
        error = (noise.sample((len(channels),), generator) * std).numpy()
        for k, name in enumerate(channels):
            values = out[name].values[i] + error[k]
            if name == "tcwv":
                values = np.maximum(values, 0.0)
            out[name].values[i] = values
    out.attrs["analysis"] = (
        f"truth plus correlated Gaussian observation error, length {config.obs_error_length_km} km, "
        f"std {dict(config.obs_error_std)}, seed {seed}"
    )
    return out
