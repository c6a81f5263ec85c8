"""Counter-based random numbers shared by every backend.

Every random number dynsim draws is a pure function of

    (seed, replica, stream, step, draw index)

through the Philox4x32-10 block cipher of Salmon et al. (Random123, SC'11): the 128-bit counter
holds (draw index, step low 32 bits, step high 16 bits | stream << 16, replica) and the 64-bit key
is the run seed. No generator state exists, so

* replicas are independent of each other and of thread count and scheduling;
* the CPU and CUDA paths draw bit-identical integers for the same (seed, replica, step);
* a run resumed at step s draws exactly what the uninterrupted run drew, with nothing to save.

The functions here are plain ``numba.njit`` functions with scalar arguments, so they can be called
from CPU kernels and compiled as CUDA device functions alike.
"""
import math

import numpy as np
from numba import njit

# Philox4x32 multipliers and Weyl key increments (Random123, philox.h).
_M0 = np.uint64(0xD2511F53)
_M1 = np.uint64(0xCD9E8D57)
_W0 = np.uint64(0x9E3779B9)
_W1 = np.uint64(0xBB67AE85)
_MASK32 = np.uint64(0xFFFFFFFF)
_SHIFT32 = np.uint64(32)
_SHIFT11 = np.uint64(11)
_SHIFT16 = np.uint64(16)
_TWO_PI = 2.0 * np.pi
_INV_2_53 = 1.0 / 9007199254740992.0  # 2**-53

#: Named random streams; a new kind of draw gets a new stream so that it never reuses numbers.
STREAM_INIT = 0        # initial parameters
STREAM_BATCH = 1       # SGD sample indices (with replacement)
STREAM_NOISE = 2       # Langevin / SDE Gaussian increments
STREAM_PERMUTATION = 3  # epoch shuffles (SGD without replacement)
STREAM_CHAIN = 4       # candidate rows of the max-norm chain (step = layer)

#: Steps are addressed with 48 bits of the counter.
MAX_STEPS = 2 ** 48


@njit(cache=True, error_model="numpy", inline="always")
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Philox4x32 with 10 rounds on four 32-bit counter words and two key words (uint64 holders)."""
    for _ in range(10):
        p0 = _M0 * c0
        p1 = _M1 * c2
        n0 = (p1 >> _SHIFT32) ^ c1 ^ k0
        n2 = (p0 >> _SHIFT32) ^ c3 ^ k1
        c1 = p1 & _MASK32
        c3 = p0 & _MASK32
        c0 = n0
        c2 = n2
        k0 = (k0 + _W0) & _MASK32
        k1 = (k1 + _W1) & _MASK32
    return c0, c1, c2, c3


@njit(cache=True, error_model="numpy", inline="always")
def _block(seed, replica, stream, step, index):
    """The four 32-bit words addressed by (seed, replica, stream, step, index)."""
    seed_u = np.uint64(seed)
    step_u = np.uint64(step)
    c0 = np.uint64(index) & _MASK32
    c1 = step_u & _MASK32
    c2 = ((step_u >> _SHIFT32) & np.uint64(0xFFFF)) | (np.uint64(stream) << _SHIFT16)
    c3 = np.uint64(replica) & _MASK32
    return philox4x32_10(c0, c1, c2, c3, seed_u & _MASK32, (seed_u >> _SHIFT32) & _MASK32)


@njit(cache=True, error_model="numpy", inline="always")
def _open_unit(hi, lo):
    """53 random bits from two 32-bit words as a double in the open interval (0, 1)."""
    bits = ((hi << _SHIFT32) | lo) >> _SHIFT11
    return (np.float64(bits) + 0.5) * _INV_2_53


@njit(cache=True, error_model="numpy", inline="always")
def uniform_pair(seed, replica, stream, step, index):
    """Two independent U(0, 1) doubles (open interval) for one counter."""
    w0, w1, w2, w3 = _block(seed, replica, stream, step, index)
    return _open_unit(w0, w1), _open_unit(w2, w3)


@njit(cache=True, error_model="numpy", inline="always")
def normal_pair(seed, replica, stream, step, index):
    """Two independent N(0, 1) doubles for one counter (Box-Muller on ``uniform_pair``)."""
    u1, u2 = uniform_pair(seed, replica, stream, step, index)
    radius = math.sqrt(-2.0 * np.log(u1))  # np.sqrt has no CUDA lowering in numba-cuda
    angle = _TWO_PI * u2
    return radius * np.cos(angle), radius * np.sin(angle)


@njit(cache=True, error_model="numpy", inline="always")
def uniform_at(seed, replica, stream, step, k):
    """The k-th U(0, 1) draw of a (replica, stream, step): draws come in pairs per counter."""
    u_even, u_odd = uniform_pair(seed, replica, stream, step, k >> 1)
    return u_odd if k & 1 else u_even


@njit(cache=True, error_model="numpy", inline="always")
def normal_at(seed, replica, stream, step, k):
    """The k-th N(0, 1) draw of a (replica, stream, step)."""
    z_even, z_odd = normal_pair(seed, replica, stream, step, k >> 1)
    return z_odd if k & 1 else z_even


# Called, not inlined, by code that draws many values outside the step loop (initialisation):
# one compiled copy of the Philox rounds instead of one per call site.
@njit(cache=True, error_model="numpy")
def normal_at_outlined(seed, replica, stream, step, k):
    """``normal_at`` as a called function."""
    return normal_at(seed, replica, stream, step, k)


@njit(cache=True, error_model="numpy", inline="always")
def index_at(seed, replica, stream, step, k, n):
    """The k-th uniform integer in [0, n) of a (replica, stream, step); bias below 2**-53 * n."""
    j = int(uniform_at(seed, replica, stream, step, k) * n)
    return j if j < n else n - 1


@njit(cache=True, error_model="numpy")
def fill_normals(seed, replica, stream, step, out):
    """Fill ``out`` with the N(0, 1) draws 0..len(out)-1 of a (replica, stream, step)."""
    n = out.shape[0]
    for pair in range((n + 1) // 2):
        z0, z1 = normal_pair(seed, replica, stream, step, pair)
        out[2 * pair] = z0
        if 2 * pair + 1 < n:
            out[2 * pair + 1] = z1


@njit(cache=True, error_model="numpy")
def fill_permutation(seed, replica, stream, step, out):
    """Fill ``out`` with a uniformly random permutation of 0..n-1 (Fisher-Yates, keyed draws)."""
    n = out.shape[0]
    for i in range(n):
        out[i] = i
    for i in range(n - 1, 0, -1):
        j = index_at(seed, replica, stream, step, i, i + 1)
        tmp = out[i]
        out[i] = out[j]
        out[j] = tmp
