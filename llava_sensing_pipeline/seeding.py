"""Deterministic seeds: every random draw in the pipeline is derived from a stable key.

A seed is the first 8 bytes of SHA-256 over ``global_seed``, the partition key (genre folder +
file stem), the chunk index and a purpose label, so re-running a partition reproduces every draw
and two chunks never share a stream.
"""

from __future__ import annotations

import hashlib
import random


def derive_seed(global_seed: int, *parts: object) -> int:
    """A 63-bit seed derived from the global seed and any stable parts (key, chunk index, label)."""
    h = hashlib.sha256(str(int(global_seed)).encode())
    for part in parts:
        h.update(b"\x1f")
        h.update(str(part).encode("utf-8"))
    return int.from_bytes(h.digest()[:8], "big") >> 1


def rng_for(global_seed: int, *parts: object) -> random.Random:
    """A ``random.Random`` seeded from :func:`derive_seed`."""
    return random.Random(derive_seed(global_seed, *parts))
