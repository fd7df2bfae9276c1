"""Stable hashing: the one source of derived seeds (noise, mini-batches, sampling, splits)."""

from __future__ import annotations

import hashlib


def stable_int(*parts: object) -> int:
    """A 63-bit integer from any printable parts; stable across processes (unlike `hash`)."""
    h = hashlib.blake2b("\x1f".join(map(str, parts)).encode(), digest_size=8).digest()
    return int.from_bytes(h, "little") & ((1 << 63) - 1)
