"""Counter-based hashing (splitmix64, vectorised) behind every random draw of the sim:
each value is a pure function of its key, so any process computes the same market."""

from __future__ import annotations

import hashlib

import numpy as np
import numpy.typing as npt

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
U64 = npt.NDArray[np.uint64]


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_SALT2 = np.uint64(0x5851F42D4C957F2D)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def _stable_hash(*parts: object) -> int:
    """A 64-bit hash stable across processes (``hash()`` of a str is salted)."""
    text = "\x1f".join(str(p) for p in parts).encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little")


def _mix(x: U64) -> U64:
    """splitmix64 finaliser on a uint64 array (wrapping arithmetic, no warnings)."""
    x = x + _GOLDEN
    x = (x ^ (x >> _S30)) * _M1
    x = (x ^ (x >> _S27)) * _M2
    return x ^ (x >> _S31)


def _u01(h: U64) -> F64:
    return ((h >> _S11).astype(np.float64) + 0.5) * (2.0**-53)


def _gauss(h: U64) -> F64:
    u1 = _u01(_mix(h))
    u2 = _u01(_mix(h ^ _SALT2))
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def _keys(*parts: object) -> np.uint64:
    return np.uint64(_stable_hash(*parts))


def _std_normal(*parts: object) -> float:
    return float(_gauss(np.array([_stable_hash(*parts)], dtype=np.uint64))[0])
