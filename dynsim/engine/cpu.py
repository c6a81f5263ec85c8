"""The CPU backend: replicas in parallel (``numba.prange``), each replica's steps in sequence.

Replicas never share state and every random draw is keyed by (seed, replica, step), so results
are bit-identical whatever the number of threads or their scheduling.
"""
import math

import numpy as np
from numba import njit, prange

from ..integrators import SDE_CODE, TI_METHOD, TI_N_XI, TI_SAMPLING
from ..integrators.discrete import discrete_step
from ..integrators.sde import WORK_ROWS, sde_step
from ..models.simple import MI_DIM, MI_WIDTH
from ..observables import measure

STATUS_OK = 0
STATUS_NONFINITE = 1

_WITHOUT_REPLACEMENT = 2


@njit(cache=True, error_model="numpy", parallel=True)
def _advance(params, x, y, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
    """Advance every live replica from step s0 to s1 in place; flag non-finite ones in ``status``."""
    replicas = params.shape[0]
    width, dim, n_train = mi[MI_WIDTH], mi[MI_DIM], x.shape[0]
    n_perm = n_train if ti[TI_SAMPLING] == _WITHOUT_REPLACEMENT else 0
    sde = ti[TI_METHOD] == SDE_CODE
    for r in prange(replicas):
        if status[r] != STATUS_OK:
            continue
        z = np.empty(width)
        h = np.empty(width)
        g = np.empty(dim)
        perm = np.empty(n_perm, dtype=np.int64)
        perm_epoch = np.full(1, -1, dtype=np.int64)
        xi = np.empty(ti[TI_N_XI])
        work = np.empty((WORK_ROWS if sde else 0, dim))
        theta = params[r]
        for s in range(s0, s1):
            if sde:
                ok = sde_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, xi, work)
            else:
                ok = discrete_step(theta, x, y, mi, mf, ti, tf, seed, r, s, z, h, g, perm, perm_epoch)
            if not ok:
                status[r] = STATUS_NONFINITE
                failed_step[r] = s
                break
        if status[r] == STATUS_OK:
            for j in range(dim):
                if not math.isfinite(theta[j]):
                    status[r] = STATUS_NONFINITE
                    failed_step[r] = s1
                    break


class CpuBackend:
    name = "cpu"
    device = "cpu"

    def advance(self, params, data, mi, mf, ti, tf, seed, s0, s1, status, failed_step):
        _advance(params, data.x_train, data.y_train, mi, mf, ti, tf, np.uint64(seed), s0, s1, status, failed_step)

    def measure(self, params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility=(0, 1.0, 0.1)):
        measure(params, data, mi, mf, loss_code, eta, class_threshold, buffers, fragility)
