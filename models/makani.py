"""Import of makani "model packages" (the HENS SFNO checkpoints, NVIDIA's ``sfno_73ch_small``) into our format.

A package is a folder::

    config.json                          makani's parameters (architecture, channels, extra inputs)
    global_means.npy, global_stds.npy    normalisation, shape (1, N, 1, 1) over the dataset's channels
    orography.nc, land_mask.nc           optional (``add_orography``, ``add_landmask``): variables Z, LSM
    training_checkpoints/best_ckpt_mp0.tar   ``torch.save`` of a dict with ``model_state``

:func:`import_package` maps it onto our SFNO (``models.sfno``, with the makani-parity options) and
writes a checkpoint (``card.json`` + ``weights.safetensors``). It refuses, with a message naming the
problem, anything it cannot map exactly: other networks or options that change the computation, a
weight without a counterpart, missing weights, shapes that disagree, unknown channel names.

The checkpoint ("flexible" or "legacy" layout) is read with ``models.checkpoint.load_restricted``: PyTorch's
restricted unpickler (tensors, plain containers) plus makani's parameter classes rebuilt as inert records
(``models.makani_settings.PICKLE_ALLOWLIST``); any other class is refused and never constructed, and no
module named in the file is imported. The pickled params are cross-checked with ``config.json`` and settings
that change the arithmetic are refused (``models.makani_settings``). :func:`import_directory` imports a
folder of packages as ``sfno-0``, ``sfno-1``, ... (``docs/makani.md``).

Mapping notes (makani v0.1.0 -> ours): prefixes ``module.`` and ``model.`` are stripped;
``encoder.fwd.k``/``decoder.fwd.k`` -> ``encoder.k``/``decoder.k`` (makani's ``encoder_layers=n`` is our
``n + 1``); ``blocks.i.filter.filter.weight`` (complex ``(in, out, l)`` in v0.1.0, ``(1, in, out, l)`` in
later makani) -> ``blocks.i.filter.weight`` as real ``(in, out, l, 2)``; ``blocks.i.mlp.fwd.3`` ->
``blocks.i.mlp.fwd.2``. Channel order always comes from ``config.json`` (``channel_names``, indexed by
``in_channels``), with ``2d`` read as ``d2m``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from pathlib import Path

import numpy as np
import torch

from models.checkpoint import CARD, CheckpointError, InertRecord, load_restricted
from models.makani_settings import (PARAMS_CLASSES, PICKLE_ALLOWLIST, _fail, _get, _none_like, check_supported,
                                    pickled_settings, reconcile)

log = logging.getLogger(__name__)

CHECKPOINT = "training_checkpoints/best_ckpt_mp0.tar"
MEANS, STDS = "global_means.npy", "global_stds.npy"
OROGRAPHY, LAND_MASK = "orography.nc", "land_mask.nc"

_KEY_MAP = [
    (re.compile(r"encoder\.fwd\.(\d+)\.(weight|bias)"), r"encoder.\1.\2"),
    (re.compile(r"decoder\.fwd\.(\d+)\.(weight|bias)"), r"decoder.\1.\2"),
    (re.compile(r"blocks\.(\d+)\.filter\.filter\.weight"), r"blocks.\1.filter.weight"),
    (re.compile(r"blocks\.(\d+)\.(norm[01])\.(weight|bias)"), r"blocks.\1.\2.\3"),
    (re.compile(r"blocks\.(\d+)\.mlp\.fwd\.0\.(weight|bias)"), r"blocks.\1.mlp.fwd.0.\2"),
    (re.compile(r"blocks\.(\d+)\.mlp\.fwd\.3\.(weight|bias)"), r"blocks.\1.mlp.fwd.2.\2"),
    (re.compile(r"blocks\.(\d+)\.outer_skip\.weight"), r"blocks.\1.outer_skip.weight"),
    (re.compile(r"residual_transform\.weight"), r"residual_transform.weight"),
]
#: buffers of torch-harmonics transforms that some versions store: recomputed from the grid, so dropped
_RECOMPUTED = re.compile(r"(.*\.)?(trans_down|itrans_up|trans|itrans|forward_transform|inverse_transform)\.(weights|pct)")


# -- reading ----------------------------------------------------------------------------------------
def read_config(root: Path) -> dict:
    path = root / "config.json"
    if not path.is_file():
        _fail(root, "no config.json (is this a makani model package?)")
    try:
        config = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        _fail(root, f"config.json is not valid JSON ({error})")
    if not isinstance(config, dict):
        _fail(root, "config.json must hold a JSON object")
    return config


def _strip_prefixes(key: str) -> str:
    while True:
        for prefix in ("module.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
                break
        else:
            return key


def model_state(root: Path) -> dict:
    """The ``model_state`` of the package's checkpoint, prefixes stripped (see :func:`read_checkpoint`)."""
    return read_checkpoint(root)[0]


def read_checkpoint(root: Path) -> tuple[dict, dict | None, dict]:
    """The checkpoint's weights (prefixes stripped), its pickled parameters as plain settings (or ``None``)
    and a short description of its layout (for the card).

    Both of makani's layouts are read: "flexible" (``model.`` keys, one file) and "legacy" (``module.model.``
    keys from DDP, ``optimizer_state_dict``, one file per model-parallel rank: only a single-rank one is
    accepted). Optimizer and scheduler state are read (restricted, never used) and dropped.
    """
    path = root / CHECKPOINT
    if not path.is_file():
        _fail(root, f"no {CHECKPOINT}")
    ranks = sorted(p.name for p in path.parent.glob("best_ckpt_mp*.tar") if p.name != path.name)
    if ranks:
        _fail(root, f"the checkpoint is split over model-parallel ranks ({path.name}, {', '.join(ranks)}); merge it "
                    "into one file with makani's convert_legacy_to_flexible.py first")
    checkpoint = load_restricted(path, PICKLE_ALLOWLIST)
    if not isinstance(checkpoint, dict) or "model_state" not in checkpoint:
        keys = sorted(map(str, checkpoint))[:10] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        _fail(root, f"{CHECKPOINT} has no 'model_state' (it holds {keys})")
    state = checkpoint["model_state"]
    if not isinstance(state, dict):
        _fail(root, f"{CHECKPOINT}: model_state is a {type(state).__name__}, not a dict of tensors")
    out = {}
    for key, value in state.items():
        if not isinstance(value, torch.Tensor):
            _fail(root, f"{CHECKPOINT}: model_state[{key!r}] is a {type(value).__name__}, not a tensor")
        out[_strip_prefixes(str(key))] = value
    params = checkpoint.get("params")
    if isinstance(params, dict):  # parameters saved as a plain dict: read as they are
        settings = {str(k): (None if isinstance(v, str) and v == "None" else v) for k, v in params.items()}
    elif params is None:
        settings = None
    elif isinstance(params, InertRecord) and params.class_path in PARAMS_CLASSES:
        settings = pickled_settings(params)
    else:
        _fail(root, f"{CHECKPOINT}: 'params' is a {getattr(params, 'class_path', type(params).__name__)}, "
                    f"not one of makani's parameter classes {list(PARAMS_CLASSES)}")
    layout = {"layout": "legacy (DDP module. prefix)" if any(str(k).startswith("module.") for k in state) else "flexible",
              "contents": sorted(map(str, checkpoint)),
              "params_class": getattr(params, "class_path", type(params).__name__ if params is not None else None)}
    return out, settings, layout


# -- configuration ----------------------------------------------------------------------------------
def channels_and_indices(root: Path, config: dict) -> tuple[list[str], list[int]]:
    """Our channel names, in the model's order, and their indices into the statistics files."""
    from forecast.lexicon import canonical_channel, is_known_channel

    names = config.get("channel_names")
    if not isinstance(names, list) or not names:
        _fail(root, "config.json has no channel_names list")
    indices = config.get("in_channels")
    if indices is None:
        indices = list(range(len(names)))
    elif isinstance(indices, int):  # a count rather than makani's index list
        indices = list(range(indices))
    if not isinstance(indices, list) or not all(isinstance(i, int) for i in indices):
        _fail(root, f"config.json in_channels must be a list of indices, got {indices!r}")
    out_indices = config.get("out_channels", indices)
    out_indices = list(range(out_indices)) if isinstance(out_indices, int) else out_indices
    if list(out_indices) != list(indices):
        _fail(root, "config.json predicts other channels than it takes (in_channels != out_channels); not supported")
    if len(names) == len(indices):
        model_names = list(names)
    elif len(names) > max(indices):
        model_names = [names[i] for i in indices]
    else:
        _fail(root, f"config.json has {len(names)} channel_names but in_channels {indices}")
    ours = [canonical_channel(str(n)) for n in model_names]
    unknown = [n for n, c in zip(model_names, ours) if not is_known_channel(c)]
    if unknown:
        _fail(root, f"channel name(s) {unknown} are not known to this system (surface channels u10m, v10m, u100m, "
                    "v100m, t2m, d2m, sp, msl, tcwv and u/v/z/t/q/r at pressure levels)")
    if len(set(ours)) != len(ours):
        _fail(root, f"config.json names a channel twice: {ours}")
    return ours, list(indices)


def _extra_inputs(root: Path, config: dict, grid, n_state: int, n_encoder: int | None) -> tuple[dict, torch.Tensor | None]:
    """The extra-input spec and the static fields (orography, one-hot land-sea mask) makani would build.

    makani one-hot encodes the land-sea mask with ``max + 1`` classes (2 for ERA5's mask, which has exact
    ones over land). The encoder's input count (``n_encoder``) settles the class count when the file's
    mask lacks its top class; a mask with more classes than the weights have room for is refused.
    """
    extra: dict = {}
    if config.get("add_zenith"):
        extra["cos_zenith"] = True
    if config.get("add_grid"):
        kind = "sinusoidal" if _get(config, "gridtype", "sinusoidal") == "sinusoidal" else "linear"
        coordinates = "radians" if config.get("lat") is not None and config.get("lon") is not None else "unit"
        extra["grid"] = {"kind": kind, "frequencies": int(_get(config, "grid_num_frequencies", 1)) if kind == "sinusoidal" else 0,
                         "coordinates": coordinates}
        if coordinates == "radians":
            lat, lon = np.asarray(config["lat"], float), np.asarray(config["lon"], float)
            if lat.shape != (grid.nlat,) or lon.shape != (grid.nlon,) or not (
                    np.allclose(lat, grid.lat, atol=1e-3) and np.allclose(lon, grid.lon, atol=1e-3)):
                _fail(root, "config.json lat/lon are not the model grid's coordinates (north to south, east from 0)")
    static, names = [], []
    if config.get("add_orography"):
        static.append(_orography(root, grid))
        names.append("orography")
    if config.get("add_landmask"):
        from models.extra_inputs import ExtraInputSpec

        room = None
        if n_encoder is not None:
            room = n_encoder - n_state - ExtraInputSpec.from_dict(extra).count - len(names)
        mask = _land_mask(root, grid, room)
        static.append(mask)
        names += [f"land_sea_mask_{k}" for k in range(mask.shape[0])]
    if names:
        extra["static"] = names
    return extra, (torch.cat(static)[None] if static else None)


def _read_invariant(root: Path, filename: str, variables: tuple[str, ...], grid) -> np.ndarray:
    import xarray as xr

    path = root / filename
    if not path.is_file():
        _fail(root, f"config.json asks for {filename} (add_orography/add_landmask) but the package has none")
    with xr.open_dataset(path) as ds:
        name = next((v for v in variables if v in ds.data_vars), None)
        if name is None:
            _fail(root, f"{filename} has no variable {' or '.join(variables)} (it has {sorted(map(str, ds.data_vars))})")
        da = ds[name]
        while da.ndim > 2:
            da = da.isel({da.dims[0]: 0})
        lat_dim = next((d for d in da.dims if d in ("latitude", "lat")), None)
        lon_dim = next((d for d in da.dims if d in ("longitude", "lon")), None)
        if lat_dim is not None and lon_dim is not None:
            da = da.transpose(lat_dim, lon_dim)
            if da[lat_dim].size > 1 and float(da[lat_dim][0]) < float(da[lat_dim][-1]):
                da = da.isel({lat_dim: slice(None, None, -1)})
                log.info("%s: latitudes ascending in the file, flipped to north-to-south", filename)
            if da[lon_dim].size > 1 and float(da[lon_dim].min()) < 0:
                da = da.isel({lon_dim: np.argsort(np.mod(da[lon_dim].values, 360.0), kind="stable")})
                log.info("%s: longitudes -180..180 in the file, moved to 0..360", filename)
        values = np.asarray(da.values)
    if values.shape != (grid.nlat, grid.nlon):
        _fail(root, f"{filename}: {name} has shape {values.shape}, the model grid is {(grid.nlat, grid.nlon)}")
    if not np.isfinite(values).all():
        _fail(root, f"{filename}: {name} has NaN or Inf")
    return values


def _orography(root: Path, grid) -> torch.Tensor:
    """makani v0.1.0: Z scaled to [0, 1], then standardised with the (unbiased) std plus 1e-6."""
    z = _read_invariant(root, OROGRAPHY, ("Z", "z", "orography", "geopotential_at_surface"), grid).astype(np.float32)
    z = (z - z.min()) / (z.max() - z.min())
    oro = torch.tensor(z, dtype=torch.float32)
    return ((oro - oro.mean()) / (oro.std() + 1.0e-6))[None]


def _land_mask(root: Path, grid, room: int | None = None) -> torch.Tensor:
    """makani v0.1.0: LSM cast to integers (truncating fractions) and one-hot encoded (classes 0..max)."""
    lsm = _read_invariant(root, LAND_MASK, ("LSM", "lsm", "land_sea_mask"), grid)
    if lsm.min() < 0:
        _fail(root, f"{LAND_MASK}: LSM has negative values")
    classes = torch.tensor(lsm.astype(np.float64), dtype=torch.float64).to(torch.long)
    count = int(classes.max()) + 1
    if room is not None and room != count:
        if room < count:
            _fail(root, f"{LAND_MASK}: LSM one-hot encodes to {count} channels; the weights have room for {room}")
        log.info("%s: LSM has no value %d; one-hot encoded with %d classes as the weights expect", LAND_MASK, room - 1, room)
        count = room
    return torch.nn.functional.one_hot(classes, count).permute(2, 0, 1).to(torch.float32)


def architecture(root: Path, config: dict, n_channels: int, extra: dict):
    """Our ``SFNOConfig`` equivalent to the package's makani SFNO."""
    from models.sfno import SFNOConfig

    nlat, nlon = int(config["img_shape_x"]), int(config["img_shape_y"])
    scale = int(config["scale_factor"])
    h, w = nlat // scale, nlon // scale
    fraction = float(_get(config, "hard_thresholding_fraction", 1.0))
    max_modes = config.get("max_modes")
    if not _none_like(max_modes):
        modes_lat, modes_lon = (int(m) for m in max_modes)
    else:
        modes_lat, modes_lon = int(h * fraction), int((w // 2 + 1) * fraction)
    modes = min(modes_lat, modes_lon)  # torch-harmonics truncates triangularly
    try:
        return SFNOConfig(
            in_channels=n_channels, out_channels=n_channels, nlat=nlat, nlon=nlon,
            grid=_get(config, "model_grid_type", "equiangular"),
            internal_grid=_get(config, "sht_grid_type", "legendre-gauss"), scale_factor=scale,
            embed_dim=int(config["embed_dim"]), num_layers=int(config["num_layers"]),
            mlp_ratio=float(_get(config, "mlp_ratio", 2.0)), encoder_layers=int(_get(config, "encoder_layers", 1)) + 1,
            normalization=_get(config, "normalization_layer", "instance_norm"), hard_thresholding_fraction=fraction,
            big_skip=bool(_get(config, "big_skip", True)), activation=_get(config, "activation_function", "gelu"),
            max_modes=modes, mlp_output_bias=True, skip_resampling="shape_or_grid", extra_inputs=extra,
        )
    except (KeyError, ValueError, TypeError) as error:
        _fail(root, f"config.json does not describe a usable SFNO ({error})")


def _filter_weight(key: str, value: torch.Tensor) -> torch.Tensor:
    """makani's complex ``(in, out, l)`` (v0.1.0) or ``(1, in, out, l)`` (later) -> real ``(in, out, l, 2)``."""
    if value.is_complex():
        value = torch.view_as_real(value)
    if value.ndim == 5:
        if value.shape[0] != 1:
            raise CheckpointError(f"{key}: grouped spectral filters ({value.shape[0]} groups) are not supported")
        value = value[0]
    return value.to(torch.float32).contiguous()


def map_state(root: Path, state: dict, expected: dict) -> dict:
    """makani weights under our network's names (``expected``: our network's names and shapes)."""
    mapped, unmappable, dropped = {}, [], []
    for key, value in state.items():
        for pattern, replacement in _KEY_MAP:
            if pattern.fullmatch(key):
                ours = pattern.sub(replacement, key)
                mapped[ours] = _filter_weight(key, value) if ours.endswith("filter.weight") else value.to(torch.float32)
                break
        else:
            if _RECOMPUTED.fullmatch(key):
                dropped.append(key)
            else:
                unmappable.append(key)
    if unmappable:
        _fail(root, f"{CHECKPOINT}: cannot map {len(unmappable)} weight(s) onto the SFNO: {unmappable[:5]}")
    if dropped:
        log.info("dropped %d spherical-transform buffers (recomputed from the grid)", len(dropped))
    needed = {k for k in expected if not k.startswith("extra.")}
    missing = sorted(needed - set(mapped))
    extra = sorted(set(mapped) - needed)
    if missing or extra:
        _fail(root, f"{CHECKPOINT}: weights do not match config.json's SFNO: missing {missing[:5]}, "
                    f"unexpected {extra[:5]} (check num_layers, encoder_layers, big_skip)")
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key]):
            _fail(root, f"{CHECKPOINT}: {key} has shape {tuple(value.shape)}, config.json's SFNO needs "
                        f"{tuple(expected[key])}")
    return mapped


def import_package(package, out, name: str | None = None, dt_hours: int | None = None,
                   cos_zenith: str = "makani-float32"):
    """Import the makani package at ``package`` into our checkpoint format at ``out``; returns the card.

    Parameters
    ----------
    package, out : path-like
        The package folder and the checkpoint folder to write (must not hold a checkpoint yet).
    name : str, optional
        The card's name (default: the package folder's name).
    dt_hours : int, optional
        Time step (default: config.json ``dt`` x ``dhours``).
    cos_zenith : {"makani-float32", "float64"}
        Arithmetic of the cos-zenith input (models with ``add_zenith``): makani's float32 by default, the
        values the checkpoint was trained on (``docs/makani.md``); recorded in the card.

    Raises ``CheckpointError`` naming what cannot be mapped, before anything is written.
    """
    from forecast.grid import Grid
    from models.card import ModelCard
    from models.checkpoint import save_weights
    from models.extra_inputs import COS_ZENITH_ARITHMETIC
    from models.sfno import state_shapes

    root, out = Path(package), Path(out)
    if not root.is_dir():
        raise CheckpointError(f"makani package {root} is not a folder")
    if (out / CARD).exists():
        raise CheckpointError(f"{out} already holds a checkpoint; choose another output folder")
    if cos_zenith not in COS_ZENITH_ARITHMETIC:
        raise CheckpointError(f"cos_zenith must be one of {COS_ZENITH_ARITHMETIC}, got {cos_zenith!r}")
    config = read_config(root)
    check_supported(root, config)  # cheap refusals before the checkpoint is read
    state, pickled, layout = read_checkpoint(root)
    config = reconcile(root, config, pickled)
    check_supported(root, config, report=True)
    channels, indices = channels_and_indices(root, config)
    grid = Grid(int(config["img_shape_x"]), int(config["img_shape_y"]), _get(config, "model_grid_type", "equiangular"))
    mean, std = _statistics(root, indices)
    encoder_in = state.get("encoder.fwd.0.weight")
    extra, static = _extra_inputs(root, config, grid, len(channels),
                                  None if encoder_in is None or encoder_in.ndim != 4 else int(encoder_in.shape[1]))
    if "cos_zenith" in extra:
        extra["cos_zenith"] = True if cos_zenith == "float64" else cos_zenith
    sfno = architecture(root, config, len(channels), extra)
    if dt_hours is None:
        dt_hours = int(_get(config, "dt", 1)) * int(_get(config, "dhours", 6))
        if "dhours" not in config:
            log.warning("config.json has no dhours: assuming 6-hourly data (time step %d h)", dt_hours)
    if encoder_in is not None and encoder_in.shape[1] != sfno.network_in_channels:
        from models.extra_inputs import ExtraInputSpec

        names = ExtraInputSpec.from_dict(extra).names
        _fail(root, f"the encoder takes {encoder_in.shape[1]} channels, config.json describes {sfno.network_in_channels}"
                    f" ({len(channels)} state + {len(names)} extra: {list(names)})")
    card = ModelCard(
        family="sfno", channels=tuple(channels), grid=grid.to_dict(), dt_hours=int(dt_hours), mean=tuple(mean),
        std=tuple(std), architecture=sfno.to_dict(), name=name or root.resolve().name,
        training={"imported_from": "makani model package", "package": str(root.resolve()),
                  "config_sha256": hashlib.sha256((root / "config.json").read_bytes()).hexdigest(),
                  "checkpoint_sha256": _file_sha256(root / CHECKPOINT), "checkpoint": layout,
                  "cos_zenith_arithmetic": cos_zenith if "cos_zenith" in extra else None},
    )
    expected = state_shapes(sfno)  # names and shapes only: HENS-size weights are not allocated twice
    mapped = map_state(root, state, expected)
    if static is not None:
        if tuple(static.shape) != expected["extra.static"]:
            _fail(root, f"static inputs have shape {tuple(static.shape)}, the SFNO needs {expected['extra.static']}")
        mapped["extra.static"] = static
    weights = {f"network.{k}": v.contiguous() for k, v in mapped.items()}
    written = save_weights(weights, card, out)
    log.info("imported %s (%s checkpoint): %d channels, %d extra inputs, %d weights -> %s", root, layout["layout"],
             len(channels), sfno.extra_input_count, len(mapped), out)
    return written


def _statistics(root: Path, indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
    stats = []
    for filename in (MEANS, STDS):
        if not (root / filename).is_file():
            _fail(root, f"no {filename}")
        try:
            values = np.load(root / filename, allow_pickle=False).astype(np.float64).reshape(-1)
        except ValueError as error:
            _fail(root, f"{filename} is not a plain numeric .npy file ({error})")
        if len(values) <= max(indices):
            _fail(root, f"{filename} has {len(values)} values; in_channels needs index {max(indices)}")
        stats.append(values[indices])
    mean, std = stats
    if not (np.isfinite(mean).all() and np.isfinite(std).all() and (std > 0).all()):
        _fail(root, f"{STDS}/{MEANS}: statistics must be finite with positive standard deviations")
    return mean, std


#: the file recording which package became which checkpoint in a directory import
IMPORT_MAP = "makani-import.json"


def package_order(directory) -> list[Path]:
    """The packages (sub-folders holding a config.json) of ``directory`` in import order: names sorted with
    runs of digits compared as numbers (``seed2`` before ``seed10``), then as plain text.

    >>> import tempfile
    >>> d = Path(tempfile.mkdtemp())
    >>> for n in ("seed10", "seed2", "seed1"):
    ...     (d / n).mkdir(); (d / n / "config.json").write_text("{}") and None
    >>> [p.name for p in package_order(d)]
    ['seed1', 'seed2', 'seed10']
    """
    def key(path: Path):
        parts = re.split(r"(\d+)", path.name)
        return [(0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts], path.name

    return sorted((p for p in Path(directory).iterdir() if p.is_dir() and (p / "config.json").is_file()), key=key)


def import_directory(directory, out, prefix: str = "sfno", cos_zenith: str = "makani-float32") -> list:
    """Import every package in ``directory`` (:func:`package_order`) as ``out/<prefix>-0``, ``<prefix>-1``, ...

    The mapping (checkpoint folder -> package, checksums) is written to ``out/makani-import.json``. All
    packages are imported into ``out.partial`` first and renamed to ``out`` at the end: ``out`` appears
    complete or not at all (a refused package names itself and leaves nothing behind). Returns
    ``(checkpoint folder, card)`` pairs in import order.
    """
    import shutil

    from models.checkpoint import _write_atomic

    directory, out = Path(directory), Path(out)
    packages = package_order(directory)
    if not packages:
        raise CheckpointError(f"{directory}: no makani package in it (no config.json, and no sub-folder with one)")
    if out.exists() and any(out.iterdir()):
        raise CheckpointError(f"{out} already exists and is not empty; choose another output folder")
    for root in packages:  # cheap refusals of every package before anything is read in full or written
        check_supported(root, read_config(root))
        for filename in (CHECKPOINT, MEANS, STDS):
            if not (root / filename).is_file():
                _fail(root, f"no {filename}")
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    cards, mapping = [], {}
    try:
        for k, root in enumerate(packages):
            target = f"{prefix}-{k}"
            card = import_package(root, partial / target, cos_zenith=cos_zenith)
            cards.append((out / target, card))
            mapping[target] = {"package": root.name, "path": str(root.resolve()), "name": card.name,
                               "config_sha256": card.training["config_sha256"],
                               "checkpoint_sha256": card.training["checkpoint_sha256"],
                               "weights_sha256": card.weights_sha256}
        record = {"order": "package folder names sorted, digit runs compared as numbers", "source": str(directory.resolve()),
                  "checkpoints": mapping}
        _write_atomic(partial / IMPORT_MAP, (json.dumps(record, indent=2) + "\n").encode())
        if out.exists():
            out.rmdir()
        partial.rename(out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    log.info("imported %d packages from %s -> %s (%s)", len(cards), directory, out, IMPORT_MAP)
    return cards


def import_path(package, out, name: str | None = None, dt_hours: int | None = None,
                cos_zenith: str = "makani-float32") -> list:
    """One package (a folder with config.json) or a directory of packages (:func:`import_directory`); returns
    ``(checkpoint folder, card)`` pairs."""
    root = Path(package)
    if root.is_dir() and not (root / "config.json").exists() and package_order(root):
        if name is not None or dt_hours is not None:
            raise CheckpointError(f"{root} is a directory of packages: --name and --dt-hours apply to one package only")
        return import_directory(root, out, cos_zenith=cos_zenith)
    return [(Path(out), import_package(root, out, name=name, dt_hours=dt_hours, cos_zenith=cos_zenith))]


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


