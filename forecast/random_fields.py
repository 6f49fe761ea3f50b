"""Spherically correlated Gaussian noise drawn from an explicit ``torch.Generator``.

The field is isotropic with a Gaussian (heat-kernel) angular power spectrum
``C_l ~ exp(-l (l + 1) (L / R)^2 / 2)``, whose correlation at great-circle distance ``d`` is about
``exp(-d^2 / (2 L^2))`` for ``L`` much smaller than the radius ``R``. The spectrum is scaled so the
pointwise variance is exactly 1 over the retained degrees ``1 <= l < lmax`` (no global-mean part).
Coefficients are drawn as real normals for ``m = 0`` and complex normals with variance ``C_l`` for
``m > 0``, which with torch-harmonics' orthonormal real transform gives an isotropic field.
torch-harmonics' own ``GaussianRandomFieldS2`` draws from the global RNG, so it is not used.
"""

from __future__ import annotations

import math

import torch

from forecast.errors import InputError
from forecast.grid import Grid

EARTH_RADIUS_KM = 6371.0


class SphericalNoise(torch.nn.Module):
    """Unit-variance Gaussian noise on ``grid`` with correlation length ``length_scale_km``.

    Examples
    --------
    >>> noise = SphericalNoise(Grid(33, 64), length_scale_km=1000.0)
    >>> g = torch.Generator().manual_seed(0)
    >>> noise.sample((2, 3), generator=g).shape
    torch.Size([2, 3, 33, 64])
    """

    def __init__(self, grid: Grid, length_scale_km: float = 500.0, radius_km: float = EARTH_RADIUS_KM):
        super().__init__()
        if length_scale_km <= 0:
            raise InputError(f"length_scale_km must be positive, got {length_scale_km}")
        from torch_harmonics import InverseRealSHT

        self.grid = grid
        self.length_scale_km = float(length_scale_km)
        lmax = mmax = min((grid.nlat + 1) // 2 if grid.kind == "equiangular" else grid.nlat, grid.nlon // 2 + 1)
        self.isht = InverseRealSHT(grid.nlat, grid.nlon, lmax=lmax, mmax=mmax, grid=grid.kind, norm="ortho")
        degree = torch.arange(lmax, dtype=torch.float64)
        sigma = length_scale_km / radius_km
        spectrum = torch.exp(-degree * (degree + 1) * sigma**2 / 2)
        spectrum[0] = 0.0
        variance = torch.sum(spectrum * (2 * degree + 1) / (4 * math.pi))
        if variance <= 0:
            raise InputError(f"length scale {length_scale_km} km is too long for this grid: no variance is left")
        amplitude = torch.sqrt(spectrum / variance)[:, None].expand(lmax, mmax)
        self.register_buffer("amplitude", torch.tril(amplitude).to(torch.float32).contiguous())

    def sample(self, shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
        """Draw ``shape + (nlat, nlon)`` float32 noise; the draw order is fixed, so the same generator
        state always gives the same field."""
        lmax, mmax = self.amplitude.shape
        # drawn on the generator's device (CPU by default) so a member's noise does not depend on where it runs
        draws = torch.randn((*shape, lmax, mmax, 2), generator=generator, dtype=torch.float32).to(self.amplitude.device)
        real = draws[..., 0]
        imag = draws[..., 1] * (torch.arange(mmax, device=draws.device) > 0)
        scale = torch.where(torch.arange(mmax, device=draws.device) > 0, math.sqrt(0.5), 1.0)
        coeffs = torch.complex(real * scale * self.amplitude, imag * scale * self.amplitude)
        return self.isht(coeffs)
