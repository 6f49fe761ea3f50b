"""Derived seeds and content hashes: the one way the project turns an identity or bytes into an integer.

Both are the first 8 bytes of a SHA-256 digest, little-endian, shifted to 63 bits (a non-negative
``int64``, which ``torch.Generator.manual_seed`` and Zarr integer arrays accept). A seed is derived from
the ``|``-joined text of its parts, so different identities give unrelated seeds and no two identities
share one (short of a SHA-256 collision), unlike arithmetic such as ``seed + 1000 * i + j``.
"""

from __future__ import annotations

import hashlib


def digest_to_int(digest: bytes) -> int:
    """The first 8 bytes of ``digest`` (little-endian) as a non-negative 63-bit integer.

    >>> digest_to_int((6).to_bytes(8, "little") + b"ignored"), digest_to_int(b"\\xff" * 8) == 2**63 - 1
    (3, True)
    """
    return int.from_bytes(digest[:8], "little") >> 1


def content_hash(data: bytes) -> int:
    """A 63-bit hash of ``data`` (the store's checksum of a member's values).

    >>> content_hash(b"") == digest_to_int(hashlib.sha256(b"").digest())
    True
    """
    return digest_to_int(hashlib.sha256(data).digest())


def derived_seed(*parts) -> int:
    """A 63-bit seed from an identity: the content hash of ``"|".join(str(part) for part in parts)``.

    Parameters
    ----------
    *parts
        The identity, e.g. ``(base_seed, time stamp, member, purpose)``; each part is written with ``str``.

    Examples
    --------
    >>> derived_seed(7, "2000-01-01T00:00:00", 3, "bred") == derived_seed(7, "2000-01-01T00:00:00", 3, "bred")
    True
    >>> derived_seed(0, 1000) != derived_seed(1, 0)
    True
    """
    return content_hash("|".join(str(part) for part in parts).encode())


# -- training seeds: the arithmetic checkpoints have always been trained with, kept so that the same config
# gives bit-identical checkpoints. Every training seed is derived here and nowhere else.
ROW_SEED_STEP_FACTOR = 1_000_003
ROW_SEED_ROW_FACTOR = 65_537


def checkpoint_seed(set_seed: int, checkpoint: int) -> int:
    """The seed of checkpoint ``checkpoint`` of a model set (``train.seed``, ``extra_models.NAME.seed``):
    ``set_seed + checkpoint``, recorded in the checkpoint's card. It seeds the initial weights directly;
    the training draws use :func:`batch_sampler_seed` and :func:`training_noise_seed` of it.

    >>> [checkpoint_seed(100, k) for k in range(3)]
    [100, 101, 102]
    """
    return int(set_seed) + int(checkpoint)


def batch_sampler_seed(seed: int) -> int:
    """The seed of the generator that draws the training windows of the checkpoint with seed ``seed``:
    ``seed + 1``. (Equal to the next checkpoint's weight seed, but it drives a different draw: window starts,
    not weights.)

    >>> batch_sampler_seed(100)
    101
    """
    return int(seed) + 1


def training_noise_seed(seed: int, step: int, row: int) -> int:
    """The seed of the noise (VAE latent draws) of row ``row`` of the global batch at training step ``step``
    of the checkpoint with seed ``seed``: ``(seed * 1_000_003 + step) * 65_537 + row``. It depends on the
    row's place in the global batch, not on the rank that trains it, so DDP and one process draw the same
    noise. Distinct for every ``(step, row)`` of one checkpoint while ``row < 65_537`` and
    ``step < 1_000_003``.

    >>> training_noise_seed(0, 1, 2), training_noise_seed(1, 0, 0)
    (65539, 65537196611)
    """
    return (int(seed) * ROW_SEED_STEP_FACTOR + int(step)) * ROW_SEED_ROW_FACTOR + int(row)
