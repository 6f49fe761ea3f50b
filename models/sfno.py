"""Spherical Fourier Neural Operator (Bonev et al. 2023) on torch-harmonics' spherical harmonic transforms.

The layout follows makani's SFNO as HENS configured it: a pointwise encoder lifts the channels to
``embed_dim``; ``num_layers`` blocks each apply a spectral filter (an SHT, a ``dhconv`` contraction that
mixes channels with weights depending on the degree ``l`` only, an inverse SHT), a norm, a pointwise MLP
and a linear outer skip; a pointwise decoder maps back to the channels; a linear "big skip" adds the input.
With ``residual_prediction`` the input is also added unchanged, so the network learns the increment
(much easier to train on a CPU budget; makani's SFNO does not do this).
The first block transforms from the input grid and the last one back to it; in between the features live
on a Legendre-Gauss grid ``scale_factor`` times coarser.

Parity with makani v0.1.0's SFNO (the HENS and ``sfno_73ch_small`` checkpoints) needs the options a
makani import sets (``models.makani``; :func:`hens_config` gives the HENS model):

- ``encoder_layers``: the number of 1x1 convolutions; makani's ``encoder_layers=1`` is two (a hidden
  layer with bias and GELU, then a linear one), so it is ``encoder_layers=2`` here; the same for the decoder.
- ``mlp_output_bias``: makani's block MLP has a bias on its second layer.
- ``max_modes``: makani keeps ``int(nlat_inside * hard_thresholding_fraction)`` degrees and orders
  (torch-harmonics then truncates triangularly); 0 keeps this module's own rule.
- ``skip_resampling="shape_or_grid"``: makani projects a block's skip onto the output grid also when only
  the grid kind changes (``scale_factor=1``); this module's default only when the shape changes.
- ``extra_inputs``: cosine of the solar zenith angle, sinusoidal grid features and static fields
  (orography, land-sea mask), appended after the state channels (``models.extra_inputs``).
  ``in_channels`` counts the state channels only; the network's first layer sees ``in_channels`` plus
  the extra inputs. A model with ``cos_zenith`` needs the valid time of its input: ``forward(x, time)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.architecture import ACTIVATIONS, SFNOConfig

_ACTIVATIONS = {"gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU}
assert tuple(_ACTIVATIONS) == ACTIVATIONS


def hens_config(channels: int = 74, grid_frequencies: int = 16, static=("orography", "land_sea_mask_0",
                "land_sea_mask_1"), nlat: int = 721, nlon: int = 1440) -> SFNOConfig:
    """The HENS SFNO (``sfno_linear_74chq_sc2_layers8_edim620_wstgl2``) in makani v0.1.0 parity.

    74 channels in and out, 721x1440 equiangular outside, Legendre-Gauss 360x720 inside, embed 620,
    8 blocks, MLP ratio 2, instance norm, big skip; inputs: cos zenith, 16 sinusoidal grid frequencies
    (32 channels), orography and the one-hot land-sea mask (2 channels): 110 in all.

    >>> c = hens_config()
    >>> c.network_in_channels, c.internal_shape, c.modes
    (110, (360, 720), 360)
    """
    extra = {"cos_zenith": True, "static": list(static)}
    if grid_frequencies:
        extra["grid"] = {"kind": "sinusoidal", "frequencies": grid_frequencies, "coordinates": "unit"}
    h, w = nlat // 2, nlon // 2
    return SFNOConfig(in_channels=channels, out_channels=channels, nlat=nlat, nlon=nlon, scale_factor=2,
                      embed_dim=620, num_layers=8, mlp_ratio=2.0, encoder_layers=2, normalization="instance_norm",
                      big_skip=True, max_modes=min(h, w // 2 + 1), mlp_output_bias=True,
                      skip_resampling="shape_or_grid", extra_inputs=extra)


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


def state_shapes(config: SFNOConfig) -> dict[str, tuple[int, ...]]:
    """Names and shapes of ``SFNO(config).state_dict()``, without building it (no SHT set-up, no allocation).

    Used to check foreign weights before a HENS-size model is allocated; a test keeps it equal to the module.

    >>> shapes = state_shapes(hens_config())
    >>> shapes["blocks.0.filter.weight"], shapes["encoder.0.weight"]
    ((620, 620, 360, 2), (620, 110, 1, 1))
    """
    c, e = config, config.embed_dim
    hidden = int(e * c.mlp_ratio)
    shapes: dict[str, tuple[int, ...]] = {}

    def stack(prefix, layers, dim_in, dim_out):
        current = dim_in
        for k in range(layers - 1):
            shapes[f"{prefix}.{2 * k}.weight"] = (e, current, 1, 1)
            shapes[f"{prefix}.{2 * k}.bias"] = (e,)
            current = e
        shapes[f"{prefix}.{2 * (layers - 1)}.weight"] = (dim_out, current, 1, 1)

    from models.extra_inputs import ExtraInputSpec

    spec = ExtraInputSpec.from_dict(c.extra_inputs)
    if spec.static:
        shapes["extra.static"] = (1, len(spec.static), c.nlat, c.nlon)
    stack("encoder", c.encoder_layers, c.network_in_channels, e)
    for i in range(c.num_layers):
        b = f"blocks.{i}"
        shapes[f"{b}.filter.weight"] = (e, e, c.modes, 2)
        if c.normalization == "instance_norm":
            for norm in ("norm0", "norm1"):
                shapes[f"{b}.{norm}.weight"] = shapes[f"{b}.{norm}.bias"] = (e,)
        shapes[f"{b}.mlp.fwd.0.weight"], shapes[f"{b}.mlp.fwd.0.bias"] = (hidden, e, 1, 1), (hidden,)
        shapes[f"{b}.mlp.fwd.2.weight"] = (e, hidden, 1, 1)
        if c.mlp_output_bias:
            shapes[f"{b}.mlp.fwd.2.bias"] = (e,)
        shapes[f"{b}.outer_skip.weight"] = (e, e, 1, 1)
    stack("decoder", c.encoder_layers, e, c.out_channels)
    if c.big_skip:
        shapes["residual_transform.weight"] = (c.out_channels, c.network_in_channels, 1, 1)
    return shapes


class MLP(nn.Module):
    """Pointwise two-layer MLP of an SFNO block (1x1 convolutions)."""

    def __init__(self, dim: int, hidden: int, act, gain: float, output_bias: bool = False):
        super().__init__()
        self.fwd = nn.Sequential(_pointwise(dim, hidden, True, 2.0), act(), _pointwise(hidden, dim, output_bias, gain))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the MLP pointwise."""
        return self.fwd(x)


class SpectralFilter(nn.Module):
    """``dhconv``: y_lm = sum_i w[i, o, l] x_lm, complex weights stored as ``(in, out, l, 2)`` reals."""

    def __init__(self, forward_transform, inverse_transform, dim: int, gain: float, resample_across_grids: bool = False):
        super().__init__()
        self.forward_transform = forward_transform
        self.inverse_transform = inverse_transform
        self.modes = forward_transform.lmax
        scale = math.sqrt(gain / dim)
        self.weight = nn.Parameter(scale * torch.randn(dim, dim, self.modes, 2))
        self.resample = (forward_transform.nlat, forward_transform.nlon) != (inverse_transform.nlat, inverse_transform.nlon)
        if resample_across_grids:
            self.resample = self.resample or forward_transform.grid != inverse_transform.grid

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transform, multiply each mode by the learned filter, transform back; returns the result and the
        residual (the input on the output grid)."""
        dtype = x.dtype
        with torch.autocast(device_type=x.device.type, enabled=False):
            coeffs = self.forward_transform(x.float())
            residual = self.inverse_transform(coeffs).to(dtype) if self.resample else x
            weight = torch.view_as_complex(self.weight)
            coeffs = torch.einsum("bilm,iol->bolm", coeffs, weight)
            y = self.inverse_transform(coeffs)
        return y.to(dtype), residual


class SFNOBlock(nn.Module):
    """One SFNO block: spectral filter, normalisation, MLP and skip connections (makani's layout)."""

    def __init__(self, forward_transform, inverse_transform, config: SFNOConfig):
        super().__init__()
        dim, act = config.embed_dim, _ACTIVATIONS[config.activation]
        self.filter = SpectralFilter(forward_transform, inverse_transform, dim, gain=2.0,
                                     resample_across_grids=config.skip_resampling == "shape_or_grid")
        norm = (lambda: nn.InstanceNorm2d(dim, eps=1e-6, affine=True)) if config.normalization == "instance_norm" else nn.Identity
        self.norm0 = norm()
        self.act = act()
        self.mlp = MLP(dim, int(dim * config.mlp_ratio), act, gain=0.5, output_bias=config.mlp_output_bias)
        self.norm1 = norm()
        self.outer_skip = _pointwise(dim, dim, False, 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the block."""
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
        from models.extra_inputs import ExtraInputs, ExtraInputSpec

        spec = ExtraInputSpec.from_dict(c.extra_inputs)
        if spec.count:
            from forecast.grid import Grid

            self.extra = ExtraInputs(spec, Grid(c.nlat, c.nlon, c.grid))
        n_in = c.network_in_channels
        self.encoder = _encoder_decoder(c.encoder_layers, n_in, c.embed_dim, c.embed_dim, act)
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
            self.residual_transform = _pointwise(n_in, c.out_channels, False, 0.5)

    @property
    def needs_time(self) -> bool:
        """Whether ``forward`` needs the valid time of its input (a cos-zenith input)."""
        return bool(self.config.extra_inputs.get("cos_zenith"))

    def forward(self, x: torch.Tensor, time=None) -> torch.Tensor:
        """One step. ``time``: the valid time(s) of ``x`` (datetime64, one or one per row), for cos-zenith models."""
        if x.shape[1] != self.config.in_channels:
            raise ValueError(f"SFNO expects {self.config.in_channels} state channels, got {x.shape[1]}")
        if hasattr(self, "extra"):
            x = self.extra(x, time)
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
