"""Checkpoint format: ``<dir>/card.json`` (a ``ModelCard``) and ``<dir>/weights.safetensors``.

Our own checkpoints are never unpickled. Loading checks, in order: the card parses and names a known
family; the weights file's SHA-256 equals the card's (a truncated or altered file is refused); the tensors
are exactly the parameters the card's architecture builds, with the same shapes.

Foreign checkpoints (makani's ``torch.save`` pickles) go through :func:`load_restricted`: PyTorch's
restricted unpickler (tensors and plain containers), plus an explicit allowlist of class paths that are
rebuilt as inert values (:class:`InertRecord`, or the plain ``float``/``int``/``bool``/``str``/``list``/
``dict`` they stand for). No module named in the file is imported and no class or function from it is
called; anything else is refused with the class named.
"""

from __future__ import annotations

import os
import pickle
import re
from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from forecast.files import atomic_write, file_sha256, write_atomic
from forecast.errors import InputError
from models.card import ModelCard

CARD = "card.json"
WEIGHTS = "weights.safetensors"


class CheckpointError(InputError):
    """A checkpoint that cannot be trusted or does not match its card."""


@dataclass(frozen=True)
class InertRecord:
    """A pickled object of an allowlisted class, rebuilt as data: its class path and its attribute dict.

    Nothing of the class is imported or run; ``attributes`` is what the pickle's state held (with
    allowlisted values inside converted too).
    """

    class_path: str
    attributes: dict = field(default_factory=dict)


#: the plain types an allowlisted class may be rebuilt as (``"record"``: an :class:`InertRecord`)
FOREIGN_KINDS = ("record", "float", "int", "bool", "str", "list", "dict")


class _Stand:
    """Marker base of the stand-in classes a restricted load hands the unpickler (never seen outside)."""

    class_path = ""
    kind = ""
    _state = None

    def __setstate__(self, state):  # store, never interpret: BUILD of an allowlisted class
        self._state = state


class _RecordStand(_Stand):
    def __new__(cls, *args, **kwargs):
        return object.__new__(cls)

    def __init__(self, *args, **kwargs):  # a REDUCE that "calls" the class builds an empty record
        pass


def _stand_in(path: str, kind: str):
    """An inert stand-in for class ``path``: a subclass of the builtin it stands for plus ``_Stand``."""
    if kind not in FOREIGN_KINDS:
        raise ValueError(f"allowlist kind {kind!r} for {path} is not one of {FOREIGN_KINDS}")
    if kind == "dict":  # pickled through OrderedDict.__reduce__ (REDUCE, SETITEMS, BUILD): PyTorch's unpickler
        def rebuild(*args):  # fills only exact dict types and builds slot state only on non-OrderedDict ones
            return Counter()
        return rebuild
    base = {"record": (_RecordStand,), "float": (float, _Stand), "int": (int, _Stand), "bool": (int, _Stand),
            "str": (str, _Stand), "list": (list, _Stand)}[kind]
    name = "Inert_" + re.sub(r"\W", "_", path)
    return type(name, base, {"class_path": path, "kind": kind, "__module__": __name__})


def _plain(value, memo: dict):
    """``value`` with every stand-in replaced by the plain value or :class:`InertRecord` it stands for."""
    if isinstance(value, (torch.Tensor, str, bytes, int, float, type(None))) and not isinstance(value, _Stand):
        return value
    key = id(value)
    if key in memo:
        return memo[key]
    if isinstance(value, _Stand):
        if value.kind == "record":
            state = value._state
            slots = {}
            if isinstance(state, tuple) and len(state) == 2:
                state, slots = state
            attributes = {}
            memo[key] = out = InertRecord(value.class_path, attributes)
            for part in (state, slots):
                if isinstance(part, Mapping):
                    attributes.update({str(k): _plain(v, memo) for k, v in part.items()})
            return out
        if value.kind == "list":
            memo[key] = out = []
            out.extend(_plain(v, memo) for v in value)
            return out
        out = {"float": float, "int": int, "bool": bool, "str": str}[value.kind](value)
    elif isinstance(value, (dict, OrderedDict)):
        memo[key] = out = type(value)() if type(value) in (dict, OrderedDict) else {}
        out.update((_plain(k, memo), _plain(v, memo)) for k, v in value.items())
        return out
    elif isinstance(value, list):
        memo[key] = out = []
        out.extend(_plain(v, memo) for v in value)
        return out
    elif isinstance(value, tuple):
        out = tuple(_plain(v, memo) for v in value)
    elif isinstance(value, set):
        out = {_plain(v, memo) for v in value}
    else:
        out = value
    memo[key] = out
    return out


def load_restricted(path: str | os.PathLike, allow: Mapping[str, str] | None = None) -> object:
    """A foreign ``torch.save`` file read with PyTorch's restricted unpickler plus the allowlist ``allow``.

    Parameters
    ----------
    path : path-like
        The file (zip or legacy format).
    allow : mapping, optional
        Class path (``"package.module.Class"``) -> the kind it is rebuilt as (:data:`FOREIGN_KINDS`):
        ``"record"`` gives an :class:`InertRecord`; the others give the plain builtin value. Empty by
        default: tensors and plain containers only.

    Raises
    ------
    CheckpointError
        The file holds a global outside the allowlist (named in the message) or is not readable.
    """
    path = Path(path)
    stand_ins = [(_stand_in(p, kind), p) for p, kind in sorted((allow or {}).items())]
    try:
        with torch.serialization.safe_globals(stand_ins):
            try:  # memory-map the storages: a HENS checkpoint holds about 9 GB of filters
                loaded = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as error:
                if "mmap" not in str(error):
                    raise
                loaded = torch.load(path, map_location="cpu", weights_only=True)  # the legacy (non-zip) format
    except pickle.UnpicklingError as error:
        refused = [name for name in _pickled_globals(path) if name not in (allow or {}) and not _torch_global(name)]
        if refused:
            what = refused[0]
        else:
            text = " ".join(str(error).split())
            found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"(Unsupported operand \d+)", text)
            what = found.group(1) if found else text[:200]
        raise CheckpointError(f"{path}: refused: it holds a pickled object that is not a tensor, a plain container or "
                              f"an allowlisted class ({what}); nothing else is unpickled from foreign checkpoints") from None
    except (RuntimeError, EOFError, OSError, ValueError, TypeError, AttributeError) as error:
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint ({' '.join(str(error).split())[:200]})") from None
    try:
        return _plain(loaded, {})
    except RecursionError:
        raise CheckpointError(f"{path}: refused: its pickled objects are nested too deeply to read") from None


def _torch_global(name: str) -> bool:
    return name.startswith("torch.") or name in ("collections.OrderedDict", "builtins.set", "builtins.complex")


def _pickled_globals(path: Path) -> list[str]:
    """The ``module.name`` of every GLOBAL opcode in a ``torch.save`` file, read with ``pickletools.genops``
    (which parses opcodes and executes nothing); to name what a refused file holds."""
    import _compat_pickle  # the Python 2 module names protocol 2 writes (__builtin__ for builtins)
    import io
    import pickletools
    import zipfile

    names = []
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                member = next(n for n in archive.namelist() if n.endswith("data.pkl"))
                stream, count = io.BytesIO(archive.read(member)), 1  # the object only: storages are separate
        else:
            stream, count = open(path, "rb"), 5  # magic, protocol, system info, the object, storage keys
        with stream:
            for _ in range(count):
                for opcode, argument, _position in pickletools.genops(stream):
                    if opcode.name in ("GLOBAL", "INST") and isinstance(argument, str):
                        module, _space, name = argument.partition(" ")
                        names.append(f"{_compat_pickle.IMPORT_MAPPING.get(module, module)}.{name}")
    except (ValueError, OSError, StopIteration, zipfile.BadZipFile):
        pass
    return names


def build_model(card: ModelCard) -> nn.Module:
    """A freshly initialised model (a ``ForecastModel``) for ``card``."""
    if card.family == "sfno":
        from models.base import DeterministicModel
        from models.sfno import SFNO, SFNOConfig

        return DeterministicModel(card, SFNO(SFNOConfig.from_dict(card.architecture)))
    if card.family == "vae":
        from models.vae import build_vae

        return build_vae(card)
    raise CheckpointError(f"no builder for model family {card.family!r}")


def save_weights(state: dict, card: ModelCard, directory: str | os.PathLike) -> ModelCard:
    """Write ``state`` (tensors by name) and ``card`` to ``directory``; returns the card with the weights' SHA-256.

    The weights are streamed to a temporary file, synced and renamed, then the card is written the same
    way: a checkpoint is never left half-written under its final names.
    """
    from dataclasses import replace

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    with atomic_write(directory / WEIGHTS) as tmp:
        save_file(state, str(tmp))
        digest = file_sha256(tmp)
    card = replace(card, weights_sha256=digest)
    write_atomic(directory / CARD, card.to_json())
    return card


def save_checkpoint(model: nn.Module, directory: str | os.PathLike) -> ModelCard:
    """Write ``model`` (which carries its ``card``) to ``directory``; returns the card as written."""
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    card = save_weights(state, model.card, directory)
    model.card = card
    return card


def read_card(directory: str | os.PathLike) -> ModelCard:
    path = Path(directory) / CARD
    if not path.is_file():
        raise CheckpointError(f"checkpoint {directory}: no {CARD}")
    try:
        return ModelCard.from_json(path.read_text(), source=str(path))
    except ValueError as error:
        raise CheckpointError(str(error)) from None


def load_checkpoint(directory: str | os.PathLike, device: str | torch.device = "cpu") -> nn.Module:
    """The model stored in ``directory``, in eval mode, on ``device``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    directory = Path(directory)
    card = read_card(directory)
    weights = directory / WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"checkpoint {directory}: no {WEIGHTS}")
    if card.weights_sha256 and file_sha256(weights) != card.weights_sha256:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS} does not match the checksum in its card (truncated or altered)")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS} is not a readable safetensors file ({error})") from None
    bad = [key for key, tensor in state.items() if tensor.is_floating_point() and not torch.isfinite(tensor).all()]
    if bad:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS} holds NaN or infinite values in {len(bad)} tensor(s), "
                              f"e.g. {bad[0]}: its forecasts would be NaN")
    try:
        model = build_model(card)
    except CheckpointError:
        raise
    except InputError as error:  # e.g. a hyper-parameter of the wrong type
        raise CheckpointError(f"checkpoint {directory}: the architecture in {CARD} cannot be built: {error}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {directory}: card and weights disagree: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(
                f"checkpoint {directory}: card and weights disagree on {key}: card builds "
                f"{tuple(expected[key].shape)}, weights hold {tuple(tensor.shape)}"
            )
    model.load_state_dict(state)
    return model.to(device).eval()
