"""What a makani package's settings say, and which of them this system reproduces.

A makani checkpoint pickles the run's parameters (``makani.utils.YParams.ParamsBase`` or ``YParams``);
:data:`PICKLE_ALLOWLIST` lets ``models.checkpoint.load_restricted`` rebuild them as inert records, and
:func:`pickled_settings` reads them as makani's ``to_dict`` would. :func:`reconcile` cross-checks them with
``config.json``; :func:`check_supported` refuses every setting that changes the network's arithmetic in a way
we do not implement (facts from makani v0.1.0's ``sfnonet.py``, ``preprocessor.py`` and ``model_package.py``).
See ``docs/makani.md``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from models.checkpoint import CheckpointError, InertRecord

log = logging.getLogger("models.makani")


#: makani's parameter classes: a checkpoint's ``params`` (rebuilt as an ``InertRecord`` of its attributes)
PARAMS_CLASSES = ("makani.utils.YParams.ParamsBase", "makani.utils.YParams.YParams")
#: every class a makani checkpoint's pickle may name besides tensors and plain containers, and what it is
#: rebuilt as. makani's ``YParams`` reads its YAML with ruamel.yaml's round-trip loader, so parameter values
#: can be ruamel's scalar and container types (ScalarFloat, ScalarInt, CommentedSeq, ... and the comment,
#: format and position records those carry): rebuilt as the plain values they wrap. Nothing is imported.
PICKLE_ALLOWLIST = {
    **{path: "record" for path in PARAMS_CLASSES},
    **{f"ruamel.yaml.scalarfloat.{n}": "float" for n in ("ScalarFloat", "ExponentialFloat", "ExponentialCapsFloat")},
    **{f"ruamel.yaml.scalarint.{n}": "int" for n in ("ScalarInt", "BinaryInt", "OctalInt", "HexInt", "HexCapsInt",
                                                      "DecimalInt")},
    "ruamel.yaml.scalarbool.ScalarBoolean": "bool",
    **{f"ruamel.yaml.scalarstring.{n}": "str" for n in ("ScalarString", "LiteralScalarString", "FoldedScalarString",
                                                         "SingleQuotedScalarString", "DoubleQuotedScalarString",
                                                         "PlainScalarString")},
    "ruamel.yaml.comments.CommentedSeq": "list",
    "ruamel.yaml.comments.CommentedMap": "dict",
    **{f"ruamel.yaml.comments.{n}": "record" for n in ("Comment", "Format", "LineCol", "Tag")},
    "ruamel.yaml.anchor.Anchor": "record",
    "ruamel.yaml.tokens.CommentToken": "record",
    **{f"ruamel.yaml.error.{n}": "record" for n in ("CommentMark", "StreamMark", "FileMark", "StringMark")},
}

#: makani v0.1.0 settings that change the network's arithmetic: the default makani assumes and the values
#: this import reproduces (``None`` among them: unset or "none" is fine). Checked on config.json merged with
#: the pickled params; ``encoder_ratio``/``decoder_ratio``/``repeat_layers`` (only 1), crops, output shape
#: and the data grid are checked beside these.
ARITHMETIC_SETTINGS = {
    "spectral_transform": ("sht", ("sht",)),
    "filter_type": ("linear", ("linear",)),
    "operator_type": ("dhconv", ("dhconv",)),
    "factorization": (None, (None,)),
    "separable": (False, (False,)),
    "bias": (False, (False, None)),  # a bias inside the spectral filter
    "use_mlp": (True, (True,)),
    "pos_embed": ("none", (None,)),
    "normalization_layer": ("instance_norm", ("instance_norm", "none")),
    "activation_function": ("gelu", ("gelu", "relu", "silu")),
    "model_grid_type": ("equiangular", ("equiangular", "legendre-gauss")),
    "sht_grid_type": ("legendre-gauss", ("legendre-gauss", "equiangular")),
    "add_cos_to_grid": (False, (False,)),
    "normalization": ("zscore", ("zscore",)),  # minmax/none normalise the state with other statistics
    "target": ("default", ("default",)),  # "residual": the network predicts a (scaled) tendency
    "n_history": (0, (0,)),
    # exponential and mean re-normalise every input by its own spatial statistics; makani v0.1.0 treats any
    # value but "none" and "timediff" (None included) that way; "timediff" is refused too, as the issue asks
    "history_normalization_mode": ("none", ("none",)),
}
#: settings compared exactly (``None`` or "None" is not "none" for them)
STRICT_SETTINGS = ("history_normalization_mode",)

#: settings that change only parallelism, memory, precision during training or the training itself: accepted
#: whatever their value (makani v0.1.0 does not read ``mlp_mode`` at all)
NEUTRAL_SETTINGS = (
    "mlp_mode", "model_parallel_sizes", "model_parallel_names", "model_parallel_size", "h_parallel_size",
    "w_parallel_size", "fin_parallel_size", "fout_parallel_size", "matmul_parallel_size", "spatial_parallel_size",
    "split_data_channels", "checkpointing", "jit_mode", "cuda_graph_mode", "amp_mode", "enable_nhwc",
    "disable_ddp", "pos_drop_rate", "path_drop_rate", "mlp_drop_rate", "n_future", "add_noise", "noise_std",
    "roll", "perturb", "rank", "complex_activation", "spectral_layers",
)

#: settings compared between config.json and the pickled params: a disagreement is refused with both values
CROSS_CHECKED = (
    "nettype", "channel_names", "in_channels", "out_channels", "img_shape_x", "img_shape_y", "N_in_channels",
    "N_out_channels", "add_zenith", "add_grid", "gridtype", "grid_num_frequencies", "add_orography",
    "add_landmask", "lat", "lon", "data_grid_type", "dt", "dhours", "scale_factor", "embed_dim", "num_layers",
    "mlp_ratio", "encoder_layers", "encoder_ratio", "decoder_ratio", "repeat_layers", "big_skip",
    "hard_thresholding_fraction", "max_modes", "out_shape_x", "out_shape_y", "img_crop_shape_x", "img_crop_shape_y",
    *ARITHMETIC_SETTINGS,
)


def _fail(root, message):
    raise CheckpointError(f"makani package {root}: {message}")


def _get(config, key, default):
    value = config.get(key, default)
    return default if value is None else value


def _none_like(value) -> bool:
    return value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))


def pickled_settings(params: InertRecord) -> dict:
    """What makani's ``ParamsBase.to_dict`` would give for the pickled ``params``: the ``params`` dict, then
    attributes set after construction (they win, as in makani)."""
    attributes = params.attributes
    base = attributes.get("params")
    base = dict(base) if isinstance(base, dict) else {}
    original = attributes.get("_original_attrs")
    original = set(original) if isinstance(original, list) else {"_original_attrs", "params"}
    later = {k: v for k, v in attributes.items() if k not in original and not k.startswith("_")}
    settings = {**base, **later}
    return {k: (None if isinstance(v, str) and v == "None" else v) for k, v in settings.items()}


def _same(a, b) -> bool:
    if _none_like(a) and _none_like(b):
        return True
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return type(a) is type(b) and a == b or (isinstance(a, (int, float)) and isinstance(b, (int, float)) and a == b)


def reconcile(root: Path, config: dict, pickled: dict | None) -> dict:
    """config.json's settings, checked against the checkpoint's pickled parameters on every setting that
    shapes the network or its inputs (:data:`CROSS_CHECKED`); a setting only the pickle has is taken from it.

    Raises ``CheckpointError`` naming the setting and both values when they disagree.
    """
    if pickled is None:
        log.info("%s: the checkpoint holds no pickled params; config.json alone describes the model", root)
        return dict(config)
    for key in CROSS_CHECKED:
        if key in config and key in pickled and not _same(config[key], pickled[key]):
            _fail(root, f"config.json says {key}={config[key]!r} but the checkpoint's pickled params say "
                        f"{key}={pickled[key]!r}")
    return {**pickled, **config}


def check_supported(root: Path, config: dict, report: bool = False) -> None:
    """Refuse every setting that changes the network's arithmetic in a way our SFNO does not reproduce.

    ``config`` is config.json merged with the pickled params (:func:`reconcile`). Settings that only change
    parallelism or training (:data:`NEUTRAL_SETTINGS`) are accepted whatever their value (listed in the log
    when ``report``).
    """
    nettype = str(config.get("nettype", "SFNO")).lower()
    if nettype not in ("sfno", "sfnonet", "sphericalfourierneuraloperatornet"):
        _fail(root, f"nettype={config.get('nettype')!r} is not supported (only an SFNO)")
    if "nettype" not in config:
        log.warning("config.json has no nettype: reading it as an SFNO (the weights are checked against one)")
    for key, (default, allowed) in ARITHMETIC_SETTINGS.items():
        value = config.get(key, default)
        if key in STRICT_SETTINGS:
            if value not in allowed:
                _fail(root, f"makani setting {key}={value!r} changes the network's arithmetic and is not implemented "
                            f"(supported: {list(allowed)})")
            continue
        if _none_like(value) and any(_none_like(a) for a in allowed):
            continue
        if not any(_same(value, a) for a in allowed):
            _fail(root, f"makani setting {key}={value!r} changes the network's arithmetic and is not implemented "
                        f"(supported: {list(allowed)})")
    for key in ("encoder_ratio", "decoder_ratio", "repeat_layers"):
        if float(_get(config, key, 1)) != 1:
            _fail(root, f"makani setting {key}={config.get(key)!r} changes the network and is not implemented (only 1)")
    if not config.get("img_shape_x") or not config.get("img_shape_y"):
        _fail(root, "config.json has no img_shape_x/img_shape_y (the grid)")
    for other, full in (("img_crop_shape_x", "img_shape_x"), ("img_crop_shape_y", "img_shape_y"),
                        ("out_shape_x", "img_shape_x"), ("out_shape_y", "img_shape_y")):
        if config.get(other) not in (None, config[full]):
            _fail(root, f"makani setting {other}={config[other]!r} differs from {full}={config[full]!r}: cropped or "
                        "resolution-changing models are not implemented")
    if "scale_factor" not in config:
        _fail(root, "config.json has no scale_factor")
    data_grid = config.get("data_grid_type")
    if data_grid not in (None, _get(config, "model_grid_type", "equiangular")):
        _fail(root, f"makani setting data_grid_type={data_grid!r} differs from model_grid_type="
                    f"{_get(config, 'model_grid_type', 'equiangular')!r}: regridding inside the model is not implemented")
    neutral = sorted(k for k in NEUTRAL_SETTINGS if k in config)
    if neutral and report:
        log.info("%s: settings that change only parallelism or training, ignored: %s", root,
                 ", ".join(f"{k}={config[k]!r}" for k in neutral))
