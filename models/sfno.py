"""Spherical Fourier Neural Operator (Bonev et al. 2023) on torch-harmonics' spherical harmonic transforms.

The layout follows makani's SFNO as HENS configured it: a pointwise encoder lifts the channels to
``embed_dim``; ``num_layers`` blocks each apply a spectral filter (an SHT, a ``dhconv`` contraction that
mixes channels with weights depending on the degree ``l`` only, an inverse SHT), a norm, a pointwise MLP
and a linear outer skip; a pointwise decoder maps back to the channels; a linear "big skip" adds the input.
With ``residual_prediction`` the input is also added unchanged, so the network learns the increment
(much easier to train on a CPU budget; makani's SFNO does not do this).
The first block transforms from the input grid and the last one back to it; in between the features live
on a Legendre-Gauss grid ``scale_factor`` times coarser. The HENS model is
``SFNOConfig(in_channels=74 (+extra), out_channels=74, nlat=721, nlon=1440, scale_factor=2,
embed_dim=620, num_layers=8)``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import torch
from torch import nn


@dataclass(frozen=True)
class SFNOConfig:
    in_channels: int
    out_channels: int
    nlat: int
    nlon: int
    grid: str = "equiangular"
    internal_grid: str = "legendre-gauss"
    scale_factor: int = 1
    embed_dim: int = 32
    num_layers: int = 4
    mlp_ratio: float = 2.0
    encoder_layers: int = 1
    normalization: str = "instance_norm"
    hard_thresholding_fraction: float = 1.0
    big_skip: bool = True
    residual_prediction: bool = False
    activation: str = "gelu"

    def __post_init__(self):
        if self.normalization not in ("instance_norm", "none"):
            raise ValueError(f"normalization must be 'instance_norm' or 'none', got {self.normalization!r}")
        if self.activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got {self.activation!r}")
        if self.scale_factor < 1 or self.embed_dim < 1 or self.num_layers < 1:
            raise ValueError("scale_factor, embed_dim and num_layers must be positive")
        if self.residual_prediction and self.in_channels < self.out_channels:
            raise ValueError("residual_prediction needs the predicted channels first among the inputs")

    @classmethod
    def from_dict(cls, d: dict) -> "SFNOConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown SFNO hyper-parameters {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def internal_shape(self) -> tuple[int, int]:
        nlat = max(2, self.nlat // self.scale_factor)
        return nlat, max(4, self.nlon // self.scale_factor)

    @property
    def modes(self) -> int:
        """Spectral truncation (degrees and orders kept) of the filters."""
        nlat, nlon = self.internal_shape
        resolvable = (self.nlat + 1) // 2 if self.grid == "equiangular" else self.nlat
        return max(1, int(min(nlat, nlon // 2 + 1, resolvable, self.nlon // 2 + 1) * self.hard_thresholding_fraction))


_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}


def _pointwise(dim_in: int, dim_out: int, bias: bool, gain: float) -> nn.Conv2d:
    layer = nn.Conv2d(dim_in, dim_out, 1, bias=bias)
    nn.init.normal_(layer.weight, std=math.sqrt(gain / dim_in))
    if bias:
        nn.init.zeros_(layer.bias)
    return layer


def _encoder_decoder(layers: int, dim_in: int, hidden: int, dim_out: int, act, gain: float = 1.0) -> nn.Sequential:
    modules: list[nn.Module] = []
    current = dim_in
    for _ in range(layers - 1):
        modules += [_pointwise(current, hidden, True, 2.0), act()]
        current = hidden
    modules.append(_pointwise(current, dim_out, False, gain))
    return nn.Sequential(*modules)


class MLP(nn.Module):
    def __init__(self, dim: int, hidden: int, act, gain: float):
        super().__init__()
        self.fwd = nn.Sequential(_pointwise(dim, hidden, True, 2.0), act(), _pointwise(hidden, dim, False, gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fwd(x)


class SpectralFilter(nn.Module):
    """``dhconv``: y_lm = sum_i w[i, o, l] x_lm, complex weights stored as ``(in, out, l, 2)`` reals."""

    def __init__(self, forward_transform, inverse_transform, dim: int, gain: float):
        super().__init__()
        self.forward_transform = forward_transform
        self.inverse_transform = inverse_transform
        self.modes = forward_transform.lmax
        scale = math.sqrt(gain / dim)
        self.weight = nn.Parameter(scale * torch.randn(dim, dim, self.modes, 2))
        self.resample = (forward_transform.nlat, forward_transform.nlon) != (inverse_transform.nlat, inverse_transform.nlon)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = self.forward_transform(x.float())
            residual = self.inverse_transform(coeffs).to(dtype) if self.resample else x
            weight = torch.view_as_complex(self.weight)
            coeffs = torch.einsum("bilm,iol->bolm", coeffs, weight)
            y = self.inverse_transform(coeffs)
        return y.to(dtype), residual


class SFNOBlock(nn.Module):
    def __init__(self, forward_transform, inverse_transform, config: SFNOConfig):
        super().__init__()
        dim, act = config.embed_dim, _ACTIVATIONS[config.activation]
        self.filter = SpectralFilter(forward_transform, inverse_transform, dim, gain=2.0)
        norm = (lambda: nn.InstanceNorm2d(dim, eps=1e-6, affine=True)) if config.normalization == "instance_norm" else nn.Identity
        self.norm0 = norm()
        self.act = act()
        self.mlp = MLP(dim, int(dim * config.mlp_ratio), act, gain=0.5)
        self.norm1 = norm()
        self.outer_skip = _pointwise(dim, dim, False, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y, residual = self.filter(x)
        y = self.act(self.norm0(y))
        y = self.norm1(self.mlp(y))
        return y + self.outer_skip(residual)


class SFNO(nn.Module):
    """The network: ``(batch, in_channels, nlat, nlon) -> (batch, out_channels, nlat, nlon)``.

    Examples
    --------
    >>> net = SFNO(SFNOConfig(in_channels=3, out_channels=3, nlat=17, nlon=32, embed_dim=8, num_layers=2))
    >>> net(torch.zeros(2, 3, 17, 32)).shape
    torch.Size([2, 3, 17, 32])
    """

    def __init__(self, config: SFNOConfig):
        super().__init__()
        from torch_harmonics import InverseRealSHT, RealSHT

        self.config = c = config
        act = _ACTIVATIONS[c.activation]
        h, w = c.internal_shape
        modes = c.modes
        self.trans_down = RealSHT(c.nlat, c.nlon, lmax=modes, mmax=modes, grid=c.grid).float()
        self.itrans_up = InverseRealSHT(c.nlat, c.nlon, lmax=modes, mmax=modes, grid=c.grid).float()
        self.trans = RealSHT(h, w, lmax=modes, mmax=modes, grid=c.internal_grid).float()
        self.itrans = InverseRealSHT(h, w, lmax=modes, mmax=modes, grid=c.internal_grid).float()
        self.encoder = _encoder_decoder(c.encoder_layers, c.in_channels, c.embed_dim, c.embed_dim, act)
        self.blocks = nn.ModuleList(
            SFNOBlock(
                self.trans_down if i == 0 else self.trans,
                self.itrans_up if i == c.num_layers - 1 else self.itrans,
                c,
            )
            for i in range(c.num_layers)
        )
        self.decoder = _encoder_decoder(c.encoder_layers, c.embed_dim, c.embed_dim, c.out_channels, act, gain=0.5 if c.big_skip else 1.0)
        if c.residual_prediction:
            nn.init.zeros_(self.decoder[-1].weight)  # start from persistence
        if c.big_skip:
            self.residual_transform = _pointwise(c.in_channels, c.out_channels, False, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = x
        x = self.encoder(x)
        for block in self.blocks:
            x = block(x)
        x = self.decoder(x)
        if self.config.big_skip:
            x = x + self.residual_transform(residual)
        if self.config.residual_prediction:
            x = x + residual[:, : self.config.out_channels]
        return x
