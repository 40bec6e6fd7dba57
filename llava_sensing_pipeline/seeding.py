"""Deterministic seeds: every random draw in the pipeline is derived from a stable key.

A seed is the first 8 bytes of SHA-256 over ``global_seed``, the partition key (genre folder +
file stem), the chunk index and a purpose label, so re-running a partition reproduces every draw
and two chunks never share a stream.

Per-chunk draws over a whole file (the sensor records) use a counter-based generator instead of one
``random.Random`` per chunk: :func:`chunk_streams` turns a file's seed and each chunk index into a
64-bit stream key, and :func:`uniforms` hashes ``(stream, draw number)`` with the SplitMix64
finaliser. A draw therefore depends only on (global seed, file, chunk index, draw number), never on
which other chunks were drawn, and a file's draws are a few vectorised numpy operations.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence

import numpy as np


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


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = (np.uint64(n) for n in (30, 27, 31, 11))


def _splitmix(z: np.ndarray) -> np.ndarray:
    """The SplitMix64 finaliser of each element (uint64 arithmetic wraps modulo 2**64)."""
    z = (z ^ (z >> _S30)) * _MIX1
    z = (z ^ (z >> _S27)) * _MIX2
    return z ^ (z >> _S31)


def chunk_streams(file_seed: int, chunk_indices: Sequence[int] | np.ndarray) -> np.ndarray:
    """One 64-bit stream key per chunk: ``file_seed`` (from :func:`derive_seed`) mixed with the chunk index."""
    indices = np.asarray(chunk_indices, dtype=np.uint64)
    base = np.full(indices.shape, file_seed & (2**64 - 1), dtype=np.uint64)
    return _splitmix(base ^ _splitmix(indices * _GOLDEN + _GOLDEN))


def uniforms(streams: np.ndarray, draws: int) -> np.ndarray:
    """``(len(streams), draws)`` uniform numbers in the open interval (0, 1): draw ``j`` of stream ``s`` is a hash
    of ``(s, j)``, so each stream is its own reproducible sequence."""
    counters = (np.arange(1, draws + 1, dtype=np.uint64) * _GOLDEN)[None, :]
    bits = _splitmix(np.asarray(streams, dtype=np.uint64)[:, None] + counters) >> _S11
    return (bits.astype(np.float64) + 0.5) * 2.0**-53
