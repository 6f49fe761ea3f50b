"""A FuXi-ENS-style variational forecast model on the sphere (Zhong et al. 2024).

One step ``x_t -> x_t+1``: an encoder maps the state to latent features ``h`` on a Gauss grid; a prior
network gives a Gaussian ``p(z | x_t)`` per latent grid point (mean and log-variance both depend on the
state, so the noise is flow-dependent); a sample ``z`` perturbs the features, ``h + W z``, and a
decoder maps them to the increment ``x_t+1 - x_t``. In training only, a posterior network
``q(z | x_t, x_t+1)`` sees the target; the loss is the fair CRPS over several samples plus ``beta`` times
KL(q || p) (see ``models.train.vae_loss``).

Backbone: SFNO blocks (spherical harmonic transforms from torch-harmonics), not a U-Net. The blocks
are global and rotation-equivariant on the sphere, so there is no longitude seam to pad and no pole to
special-case, and they reuse the SFNO's tested layers and grids (equiangular outside, Gauss inside).

``step(x, generator)`` draws the latent noise from ``generator``: one ``torch.Generator`` for the whole
batch, or a sequence with one generator per batch row (the engine passes each member its own, so a
member's noise stream depends only on its seed). ``generator=None`` uses the prior mean: the model's
deterministic forecast (used for breeding and for ``forecast skill``).

``latent_correlation`` (rho, default 0: FuXi-ENS's independent draws) makes each member's standardised
latent noise an AR(1) sequence over its steps, ``e_t = rho e_t-1 + sqrt(1 - rho^2) n_t``, so
``z = mean(x_t) + sigma(x_t) e_t`` keeps its state-conditioned distribution at every step while the
noise persists like the weather's own unresolved forcing. The previous draw is kept per generator
(weakly: it goes with the member's generator).
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence

import torch
from torch import nn

from models.base import Normalised
from models.card import ModelCard
from models.architecture import VAEConfig
from models.sfno import SFNOBlock, _ACTIVATIONS, _encoder_decoder, _pointwise

LOGVAR_RANGE = (-12.0, 4.0)


def _draw(shape: tuple, generator, device, dtype) -> torch.Tensor:
    """Standard normal noise ``(batch, *shape[1:])``; per-row generators give per-row draws."""
    if isinstance(generator, torch.Generator):
        return torch.randn(shape, generator=generator, dtype=dtype, device=generator.device).to(device)
    if len(generator) != shape[0]:
        raise ValueError(f"{len(generator)} generators for a batch of {shape[0]}")
    return torch.stack([torch.randn(shape[1:], generator=g, dtype=dtype, device=g.device) for g in generator]).to(device)


class VAE(nn.Module):
    """FuXi-ENS-style one-step VAE on the sphere: encoder, state-dependent prior, posterior, decoder.

    The encoder maps ``x_t`` to latent features on a Gauss grid (SFNO blocks); the prior gives a Gaussian
    ``p(z | x_t)`` per latent point, the posterior ``q(z | x_t, x_t+1)`` (training only) sees the target;
    a sample ``z`` perturbs the features and the decoder maps them to the increment.

    Parameters
    ----------
    config : VAEConfig
        Hyper-parameters.

    Examples
    --------
    ``VAE(config).step(x, generator)`` is one forecast step drawing ``z`` from ``generator`` (the prior
    mean with ``None``); ``VAE(config)(x, target=y, generator=g)`` returns the step and the KL term.
    """

    def __init__(self, config: VAEConfig):
        super().__init__()
        from torch_harmonics import InverseRealSHT, RealSHT

        self.config = c = config
        blocks = c.block_config()
        act = _ACTIVATIONS[c.activation]
        h, w = blocks.internal_shape
        modes = blocks.modes
        self.trans_down = RealSHT(c.nlat, c.nlon, lmax=modes, mmax=modes, grid=c.grid).float()
        self.itrans_up = InverseRealSHT(c.nlat, c.nlon, lmax=modes, mmax=modes, grid=c.grid).float()
        self.trans = RealSHT(h, w, lmax=modes, mmax=modes, grid=c.internal_grid).float()
        self.itrans = InverseRealSHT(h, w, lmax=modes, mmax=modes, grid=c.internal_grid).float()

        def stack(n: int, first_in: bool, last_out: bool) -> nn.ModuleList:
            return nn.ModuleList(
                SFNOBlock(self.trans_down if (first_in and i == 0) else self.trans,
                          self.itrans_up if (last_out and i == n - 1) else self.itrans, blocks)
                for i in range(n)
            )

        self.lift = _encoder_decoder(1, c.in_channels, c.embed_dim, c.embed_dim, act)
        self.encoder = stack(c.encoder_blocks, first_in=True, last_out=False)
        self.prior = _pointwise(c.embed_dim, 2 * c.latent_channels, True, 0.1)
        self.posterior_lift = _encoder_decoder(1, 2 * c.in_channels, c.embed_dim, c.embed_dim, act)
        self.posterior_encoder = stack(1, first_in=True, last_out=False)
        self.posterior = _pointwise(c.embed_dim, 2 * c.latent_channels, True, 0.1)
        self.inject = _pointwise(c.latent_channels, c.embed_dim, False, 0.5)
        self.decoder = stack(c.decoder_blocks, first_in=False, last_out=True)
        self.project = _encoder_decoder(1, c.embed_dim, c.embed_dim, c.out_channels, act)
        nn.init.zeros_(self.project[-1].weight)  # start from persistence
        self._previous_noise = weakref.WeakKeyDictionary()

    @staticmethod
    def _gaussian(head: nn.Module, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, logvar = head(features).chunk(2, dim=1)
        return mean, logvar.clamp(*LOGVAR_RANGE)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent features of ``x`` on the internal grid."""
        h = self.lift(x)
        for block in self.encoder:
            h = block(h)
        return h

    def prior_distribution(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``p(z | x_t)`` from the encoder's features."""
        return self._gaussian(self.prior, h)

    def posterior_distribution(self, x: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of ``q(z | x_t, x_t+1)`` (training only)."""
        g = self.posterior_lift(torch.cat([x, target], dim=1))
        for block in self.posterior_encoder:
            g = block(g)
        return self._gaussian(self.posterior, g)

    def decode(self, h: torch.Tensor, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The next state from features ``h``, latent sample ``z`` and the input ``x`` (an increment added to ``x``)."""
        y = h + self.inject(z)
        for block in self.decoder:
            y = block(y)
        return x + self.project(y)

    def step(self, x: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None = None) -> torch.Tensor:
        """One forecast step with ``z`` drawn from the prior (one generator per row, or its mean with ``None``)."""
        h = self.encode(x)
        mean, logvar = self.prior_distribution(h)
        if generator is None:
            z = mean
        else:
            z = mean + torch.exp(0.5 * logvar) * self._standard_noise(tuple(mean.shape), generator, mean)
        return self.decode(h, z, x)

    def _standard_noise(self, shape: tuple, generator, like: torch.Tensor) -> torch.Tensor:
        fresh = _draw(shape, generator, like.device, like.dtype)
        rho = self.config.latent_correlation
        if rho == 0.0 or isinstance(generator, torch.Generator):
            return fresh
        rows = []
        for row, g in enumerate(generator):
            previous = self._previous_noise.get(g)
            noise = fresh[row] if previous is None else rho * previous + math.sqrt(1 - rho * rho) * fresh[row]
            self._previous_noise[g] = noise
            rows.append(noise)
        return torch.stack(rows)

    def forward(self, x: torch.Tensor, target: torch.Tensor | None = None, generator=None,
                sample_from: str = "posterior", use_mean: bool = False):
        """Without ``target``: the deterministic step. With it (training): ``(prediction, kl)`` where the
        latent sample comes from the posterior or the prior (``use_mean``: the prior mean) and ``kl`` is
        KL(q || p) summed over latent channels, averaged over the batch and grid."""
        if target is None:
            return self.step(x, None)
        h = self.encode(x)
        mean_p, logvar_p = self.prior_distribution(h)
        mean_q, logvar_q = self.posterior_distribution(x, target)
        kl = gaussian_kl(mean_q, logvar_q, mean_p, logvar_p).sum(dim=1).mean()
        if use_mean:
            z = mean_p
        else:
            mean, logvar = (mean_q, logvar_q) if sample_from == "posterior" else (mean_p, logvar_p)
            z = mean + torch.exp(0.5 * logvar) * _draw(tuple(mean.shape), generator, mean.device, mean.dtype)
        return self.decode(h, z, x), kl


class VAEForecastModel(Normalised):
    """The VAE with its card: ``step`` draws the latent noise from the member's generator."""

    def __init__(self, card: ModelCard, network: VAE):
        super().__init__(card)
        self.network = network

    needs_time = False  # no time-dependent inputs

    def step(self, x: torch.Tensor, generator=None, time=None) -> torch.Tensor:
        """``time`` is accepted for the common interface and not used (no time-dependent inputs)."""
        return self.network.step(x, generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``step`` with the prior mean (no noise)."""
        return self.network.step(x, None)


def build_vae(card: ModelCard) -> VAEForecastModel:
    """A freshly initialised VAE forecast model for ``card``."""
    return VAEForecastModel(card, VAE(VAEConfig.from_dict(card.architecture)))


def gaussian_kl(mean_q, logvar_q, mean_p, logvar_p) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, elementwise."""
    return 0.5 * (logvar_p - logvar_q + (torch.exp(logvar_q) + (mean_q - mean_p) ** 2) / torch.exp(logvar_p) - 1.0)


