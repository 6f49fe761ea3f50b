"""Hyper-parameters of the networks, without torch: what a checkpoint card's ``architecture`` holds and what
the config's ``train.architecture`` sets.

:class:`SFNOConfig` (``models.sfno``) and :class:`VAEConfig` (``models.vae``) check their own fields with the
``forecast.settings`` helpers, types included, so a bad value is refused with its key when a card is loaded
and when the config is read (``--dry-run`` included, :func:`check_architecture`), before anything is trained.
"""

from __future__ import annotations

import typing
from dataclasses import asdict, dataclass, field, fields

from forecast.errors import InputError, SettingError
from forecast.grid import GRID_KINDS
from forecast.settings import at_least, is_number, one_of, positive

ACTIVATIONS = ("gelu", "relu", "silu")
NORMALIZATIONS = ("instance_norm", "none")
FROM_DATA = ("in_channels", "out_channels", "nlat", "nlon", "grid")  # set from the training data, not the config
INTERNAL_GRIDS = ("legendre-gauss", "equiangular", "lobatto")  # torch-harmonics' quadratures


def _from_dict(cls, d: dict, family: str):
    """``cls(**d)`` with unknown keys refused (naming the known ones) and each value's type checked."""
    if not isinstance(d, dict):
        raise SettingError("", f"must be a mapping of {family} hyper-parameters, got {type(d).__name__}")
    known = [f.name for f in fields(cls)]
    unknown = sorted(set(d) - set(known), key=str)
    if unknown:
        raise SettingError(str(unknown[0]), f"is not one of the {family} hyper-parameters {sorted(known)}")
    hints = typing.get_type_hints(cls)
    return cls(**{key: _checked(value, hints[key], key) for key, value in d.items()})


def _checked(value, kind, key: str):
    """``value`` if it is a ``kind`` (an int may stand for a float, a whole float for an int; a bool is
    neither), else a :class:`SettingError` naming ``key``."""
    if kind is bool:
        ok, name = isinstance(value, bool), "true or false"
    elif kind is int:
        ok, name = is_number(value) and float(value).is_integer(), "an integer"
    elif kind is float:
        ok, name = is_number(value), "a number"
    elif kind is str:
        ok, name = isinstance(value, str), "a string"
    else:
        ok, name = isinstance(value, dict), "a mapping"
    if not ok:
        raise SettingError(key, f"must be {name}, got {value!r}")
    return int(value) if kind is int else value


@dataclass(frozen=True)
class NetworkShape:
    """The fields every network's hyper-parameters start with: channels and grids (see :class:`SFNOConfig`)."""

    in_channels: int
    out_channels: int
    nlat: int
    nlon: int
    grid: str = "equiangular"
    internal_grid: str = "legendre-gauss"

    def __post_init__(self):
        for key in ("in_channels", "out_channels", "nlat", "nlon"):
            positive(getattr(self, key), key)
        one_of(self.grid, GRID_KINDS, "grid")
        one_of(self.internal_grid, INTERNAL_GRIDS, "internal_grid")


@dataclass(frozen=True)
class SFNOConfig(NetworkShape):
    """Hyper-parameters of the SFNO (makani's layout); stored in a checkpoint card's ``architecture``.

    Parameters
    ----------
    in_channels, out_channels : int
        State channels in and out (extra inputs come on top of ``in_channels``).
    nlat, nlon : int
        The model grid.
    grid, internal_grid : str
        torch-harmonics grid names outside (``equiangular``) and inside (``legendre-gauss``) the network.
    scale_factor : int
        Down-sampling of the internal grid.
    embed_dim, num_layers : int
        Width and depth (HENS: 620 and 8).
    mlp_ratio : float
        Hidden width of each block's MLP relative to ``embed_dim``.
    encoder_layers : int
        Layers of the pointwise encoder and decoder.
    normalization : str
        ``instance_norm`` or ``none``.
    hard_thresholding_fraction : float
        Fraction of the spectral modes kept.
    big_skip : bool
        Add the input to the decoder's output (makani's big skip).
    residual_prediction : bool
        Predict the increment of the first ``out_channels`` inputs.
    activation : str
        Activation name.
    max_modes : int
        Cap on the spectral modes (0: automatic).
    mlp_output_bias : bool
        Bias on each MLP's output layer (makani v0.1.0 has one).
    skip_resampling : str
        ``shape`` or ``shape_or_grid``: when the skip connections resample.
    extra_inputs : dict
        Time- and grid-dependent inputs (``models.extra_inputs.ExtraInputSpec``), e.g. ``cos_zenith``.
    """

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
    max_modes: int = 0
    mlp_output_bias: bool = False
    skip_resampling: str = "shape"
    extra_inputs: dict = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        for key in ("scale_factor", "embed_dim", "num_layers", "encoder_layers", "mlp_ratio", "hard_thresholding_fraction"):
            positive(getattr(self, key), key)
        if self.hard_thresholding_fraction > 1:
            raise SettingError("hard_thresholding_fraction", f"must be at most 1, got {self.hard_thresholding_fraction}")
        one_of(self.normalization, NORMALIZATIONS, "normalization")
        one_of(self.activation, ACTIVATIONS, "activation")
        one_of(self.skip_resampling, ("shape", "shape_or_grid"), "skip_resampling")
        at_least(self.max_modes, 0, "max_modes")  # 0: automatic
        if self.max_modes > self.internal_shape[0]:
            raise SettingError("max_modes", f"must be at most the internal grid's {self.internal_shape[0]} latitudes, "
                               f"got {self.max_modes}")
        if self.residual_prediction and self.in_channels < self.out_channels:
            raise SettingError("residual_prediction", "needs the predicted channels first among the inputs")
        if self.extra_inputs:  # checked and written in a canonical form (torch is imported only for them)
            from models.extra_inputs import ExtraInputSpec

            try:
                spec = ExtraInputSpec.from_dict(self.extra_inputs)
            except SettingError:
                raise
            except InputError as error:
                raise SettingError("extra_inputs", f"cannot be used: {error}") from None
            object.__setattr__(self, "extra_inputs", spec.to_dict())
        else:
            object.__setattr__(self, "extra_inputs", {})

    @classmethod
    def from_dict(cls, d: dict) -> "SFNOConfig":
        """A config from a card's ``architecture``; unknown keys and values of the wrong type are refused."""
        return _from_dict(cls, d, "SFNO")

    def to_dict(self) -> dict:
        """The config as plain JSON values."""
        return asdict(self)

    @property
    def internal_shape(self) -> tuple[int, int]:
        """``(nlat, nlon)`` of the internal (down-sampled) grid."""
        nlat = max(2, self.nlat // self.scale_factor)
        return nlat, max(4, self.nlon // self.scale_factor)

    @property
    def extra_input_count(self) -> int:
        """Channels the extra inputs add to ``in_channels``."""
        from models.extra_inputs import ExtraInputSpec

        return ExtraInputSpec.from_dict(self.extra_inputs).count

    @property
    def network_in_channels(self) -> int:
        """Channels the first layer sees: the state plus the extra inputs."""
        return self.in_channels + self.extra_input_count

    @property
    def modes(self) -> int:
        """Spectral truncation (degrees and orders kept) of the filters."""
        if self.max_modes:
            return self.max_modes
        nlat, nlon = self.internal_shape
        resolvable = (self.nlat + 1) // 2 if self.grid == "equiangular" else self.nlat
        return max(1, int(min(nlat, nlon // 2 + 1, resolvable, self.nlon // 2 + 1) * self.hard_thresholding_fraction))


@dataclass(frozen=True)
class VAEConfig(NetworkShape):
    """Hyper-parameters of the VAE; stored in a checkpoint card's ``architecture``.

    Parameters
    ----------
    in_channels, out_channels : int
        State channels (equal: the VAE predicts increments).
    nlat, nlon : int
        The model grid.
    grid, internal_grid : str
        torch-harmonics grid names outside and inside the network.
    scale_factor : int
        Down-sampling of the latent (internal) grid.
    embed_dim : int
        Width of the features.
    encoder_blocks, decoder_blocks : int
        SFNO blocks in the encoder and the decoder.
    latent_channels : int
        Latent variables per latent grid point.
    latent_correlation : float
        AR(1) correlation rho of each member's standardised noise from step to step, in [0, 1).
    mlp_ratio : float
        Hidden width of each block's MLP relative to ``embed_dim``.
    normalization, activation : str
        As in :class:`SFNOConfig`.
    """

    scale_factor: int = 2
    embed_dim: int = 32
    encoder_blocks: int = 2
    decoder_blocks: int = 2
    latent_channels: int = 8
    latent_correlation: float = 0.0
    mlp_ratio: float = 2.0
    normalization: str = "instance_norm"
    activation: str = "gelu"

    def __post_init__(self):
        super().__post_init__()
        for key in ("scale_factor", "embed_dim", "encoder_blocks", "decoder_blocks", "latent_channels", "mlp_ratio"):
            positive(getattr(self, key), key)
        if self.in_channels != self.out_channels:
            raise SettingError("out_channels", "must equal in_channels: the VAE predicts increments")
        if not 0.0 <= self.latent_correlation < 1.0:
            raise SettingError("latent_correlation", f"must lie in [0, 1), got {self.latent_correlation}")
        one_of(self.normalization, NORMALIZATIONS, "normalization")
        one_of(self.activation, ACTIVATIONS, "activation")

    @classmethod
    def from_dict(cls, d: dict) -> "VAEConfig":
        """A config from a card's ``architecture``; unknown keys and values of the wrong type are refused."""
        return _from_dict(cls, d, "VAE")

    def to_dict(self) -> dict:
        """The config as plain JSON values."""
        return asdict(self)

    def block_config(self) -> SFNOConfig:
        """The SFNO settings the blocks and grids are built from."""
        return SFNOConfig(in_channels=self.in_channels, out_channels=self.out_channels, nlat=self.nlat, nlon=self.nlon,
                          grid=self.grid, internal_grid=self.internal_grid, scale_factor=self.scale_factor,
                          embed_dim=self.embed_dim, mlp_ratio=self.mlp_ratio, normalization=self.normalization,
                          activation=self.activation)


CONFIGS = {"sfno": SFNOConfig, "vae": VAEConfig}


def check_architecture(family: str, architecture: dict) -> None:
    """Check a config's ``architecture`` for ``family`` before any data is read: the fields the training data
    sets (:data:`FROM_DATA`) are refused and get stand-ins; ``"auto"`` for ``latent_correlation`` (calibrated
    after training) stands for 0. Raises :class:`SettingError` keyed ``architecture.<field>``.

    >>> check_architecture("sfno", {"embed_dim": "wide"})
    Traceback (most recent call last):
    forecast.errors.SettingError: architecture.embed_dim must be an integer, got 'wide'
    """
    if not isinstance(architecture, dict):
        raise SettingError("architecture", f"must be a mapping, got {type(architecture).__name__}")
    for key in FROM_DATA:
        if key in architecture:
            raise SettingError(f"architecture.{key}", "is set from the training data; leave it out")
    values = {"in_channels": 1, "out_channels": 1, "nlat": 2**20, "nlon": 2**21} | architecture  # any grid may come
    if values.get("latent_correlation") == "auto":
        values["latent_correlation"] = 0.0
    try:
        CONFIGS[family].from_dict(values)
    except SettingError as error:
        raise SettingError(f"architecture.{error.key}" if error.key else "architecture", error.problem) from None
