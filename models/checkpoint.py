"""Checkpoint format: ``<dir>/card.json`` (a ``ModelCard``) and ``<dir>/weights.safetensors``.

Nothing is ever unpickled. Loading checks, in order: the card parses and names a known family; the
weights file's SHA-256 equals the card's (a truncated or altered file is refused); the tensors are
exactly the parameters the card's architecture builds, with the same shapes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from forecast.errors import InputError
from models.card import ModelCard

CARD = "card.json"
WEIGHTS = "weights.safetensors"


class CheckpointError(InputError):
    """A checkpoint that cannot be trusted or does not match its card."""


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


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_weights(state: dict, card: ModelCard, directory: str | os.PathLike) -> ModelCard:
    """Write ``state`` (tensors by name) and ``card`` to ``directory``; returns the card with the weights' SHA-256.

    The weights are streamed to a temporary file, synced and renamed, then the card is written the same
    way: a checkpoint is never left half-written under its final names.
    """
    from dataclasses import replace

    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True, mode=0o750)
    tmp = directory / (WEIGHTS + ".tmp")
    save_file(state, str(tmp))
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    digest = _sha256(tmp)
    os.replace(tmp, directory / WEIGHTS)
    card = replace(card, weights_sha256=digest)
    _write_atomic(directory / CARD, card.to_json().encode())
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
    if card.weights_sha256 and _sha256(weights) != card.weights_sha256:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS} does not match the checksum in its card (truncated or altered)")
    try:
        state = load_file(weights)
    except (SafetensorError, OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint {directory}: {WEIGHTS} is not a readable safetensors file ({error})") from None
    model = build_model(card)
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
