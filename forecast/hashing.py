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
