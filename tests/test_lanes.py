"""Several replicas per SIMD vector (``dynsim.simd``, ``engine.cpu._advance_single_sample_lanes``): the
vector operations against the scalar ones, and the lane-blocked SGD step against the one-replica kernel
it replaces (bit for bit: the lanes do the scalar code's operations in its order) and the NumPy replay."""
import math

import numpy as np
import pytest
from numba import njit

from dynsim import simd
from dynsim.engine.cpu import advance_kernel
from dynsim.integrators.discrete import lanes_step_supported
from dynsim.models.activations import fast_tanh_lanes, tanh_layer
from dynsim.simple_experiment import Simulation

from conftest import FLOAT_RTOL, small_config
from test_core_dynamics import _numpy_replay


@njit(cache=True, error_model="numpy")
def _tanh_lanes_of(z, out):
    lanes = simd.lane_count(z)
    for k in range(0, z.shape[0], lanes):
        simd.store(out, k, fast_tanh_lanes(simd.load(z, k)))


@njit(cache=True, error_model="numpy")
def _tanh_of(z, out):
    tanh_layer(z, out, z.shape[0])  # fast_tanh for float64, fast_tanh32 for float32


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_vector_tanh_is_the_scalar_tanh_bit_for_bit(dtype, rng):
    # the whole range: small, moderate, past the clamp, signed zeros, NaN and infinities
    z = np.concatenate([rng.normal(0, 3, 4000), rng.uniform(-30, 30, 4000), 10.0 ** rng.uniform(-14, 1, 4000),
                        [0.0, -0.0, np.nan, np.inf, -np.inf, 19.0, -19.0, 9.0, 40.0, -1e-300, 1e-300, 5e-324],
                        np.zeros(4)]).astype(dtype)
    z = z[: z.size - z.size % 8]
    vector, scalar = np.empty_like(z), np.empty_like(z)
    _tanh_lanes_of(z, vector)
    _tanh_of(z, scalar)
    assert vector.view(np.uint8).tobytes() == scalar.view(np.uint8).tobytes()


@njit(cache=True, error_model="numpy")
def _vector_ops(a, b, out):
    """Rows of out: a+b, a-b, a*b, a/b, minimum, maximum, |a|, a if b >= 0 else -a, b > 0, widen(a)."""
    va, vb = simd.load(a, 0), simd.load(b, 0)
    simd.store(out[0], 0, va + vb)
    simd.store(out[1], 0, va - vb)
    simd.store(out[2], 0, va * vb)
    simd.store(out[3], 0, va / vb)
    simd.store(out[4], 0, simd.minimum(va, vb))
    simd.store(out[5], 0, simd.maximum(va, vb))
    simd.store(out[6], 0, simd.absolute(va))
    simd.store(out[7], 0, simd.where_nonnegative(vb, va, simd.negative(va)))
    simd.store(out[8], 0, simd.where_positive(vb, va, simd.splat(7.0, va)))
    lanes = simd.lane_count(a)
    v = simd.zeros(a)
    for k in range(lanes):
        v = simd.with_lane(v, k, simd.lane(va, lanes - 1 - k))
    simd.store(out[9], 0, v)
    return simd.lane_sums(simd.load(a, 0)), simd.lane_count(a)


def test_vector_operations_are_the_scalar_ones_lane_by_lane():
    a = np.array([1.5, -0.0, np.nan, 3.0])
    b = np.array([2.0, 0.0, 1.0, np.nan])
    out = np.empty((10, 4))
    total, lanes = _vector_ops(a, b, out)
    assert lanes == 4
    with np.errstate(invalid="ignore"):
        expected = [a + b, a - b, a * b, a / b,
                    [min(x, y) for x, y in zip(a, b)], [max(x, y) for x, y in zip(a, b)], np.abs(a),
                    [x if y >= 0 else -x for x, y in zip(a, b)], [x if y > 0 else 7.0 for x, y in zip(a, b)], a[::-1]]
    for row, want in zip(out, expected):
        np.testing.assert_array_equal(row, np.asarray(want, dtype=float))
    # Python's min/max keep the first argument when a comparison with NaN is false: lanes 2 and 3
    assert math.isnan(out[4, 2]) and out[4, 3] == 3.0
    # (a0 + a1) + (a2 + a3), the scalar four-accumulator order; here NaN from lane 2
    assert math.isnan(total)
    finite = np.array([1e16, 1.0, -1e16, 1.0])
    assert _vector_ops(finite, b, out)[0] == (1e16 + 1.0) + (-1e16 + 1.0)


def _scalar_advance(sim, params, steps):
    """The one-replica kernel the lane-blocked one replaces, on the same arrays."""

    cfg = sim.config
    x = np.ascontiguousarray(sim.data.x_train, dtype=params.dtype)
    y = np.ascontiguousarray(sim.data.y_train, dtype=params.dtype).reshape(-1)
    mi, mf = cfg.model.kernel_arrays()
    ti, tf = cfg.training.kernel_arrays(x.shape[0])
    status = np.zeros(params.shape[0], dtype=np.int8)
    failed = np.full(params.shape[0], -1, dtype=np.int64)
    advance_kernel(mi, ti)(0, params.shape[0], params, x, y, mi, mf, ti, tf, np.uint64(cfg.run.seed), 0, steps, status,
                           failed)
    return status, failed


def _lanes_advance(sim, params, steps):
    status = np.zeros(params.shape[0], dtype=np.int8)
    failed = np.full(params.shape[0], -1, dtype=np.int64)
    sim.advance(params, 0, steps, status, failed)
    return status, failed


# replicas not a multiple of the lanes (4 float64, 8 float32): whole blocks plus one-by-one replicas
LANE_CASES = {
    "tanh": dict(model=dict(width=8, input_dim=3)),
    "relu, decay, without replacement": dict(model=dict(width=12, activation="relu"),
                                             training=dict(weight_decay=0.1, sampling="without_replacement")),
    "linear, no hidden bias, ntk": dict(model=dict(width=4, activation="linear", hidden_bias=False, output_bias=False,
                                                   scaling="ntk")),
    "cross-entropy": dict(model=dict(width=8), training=dict(loss="cross_entropy"), task=dict(kind="random_labels")),
    "float32": dict(run=dict(precision="float32", replicas=11), model=dict(width=8)),
    "float32 relu, decay": dict(run=dict(precision="float32", replicas=19), model=dict(width=16, activation="relu"),
                                training=dict(weight_decay=0.05)),
}


TRAINERS = {
    "sgd B=1": dict(method="sgd", batch_size=1),
    "sgd B=3": dict(method="sgd", batch_size=3),
    "gd": dict(method="gd", batch_size=None),
    "langevin B=1": dict(method="langevin", batch_size=1, temperature=0.01),
    "langevin full batch": dict(method="langevin", batch_size=None, temperature=0.01),
}


@pytest.mark.parametrize("trainer", TRAINERS)
@pytest.mark.parametrize("case", LANE_CASES)
def test_lane_blocked_steps_are_the_one_replica_kernels_bit_for_bit(case, trainer):
    sections = {name: dict(values) for name, values in LANE_CASES[case].items()}
    sections.setdefault("run", {}).setdefault("replicas", 9)
    sections["training"] = {**sections.get("training", {}), **TRAINERS[trainer]}
    sim = Simulation(small_config(**sections))
    cfg = sim.config
    mi, _ = cfg.model.kernel_arrays()
    ti, tf = cfg.training.kernel_arrays(cfg.task.n_train)
    assert lanes_step_supported(mi, ti, tf)  # the case does take the lane-blocked path
    theta0 = sim.initial_params()
    lanes, scalar = theta0.copy(), theta0.copy()
    assert not _lanes_advance(sim, lanes, 40)[0].any()
    _scalar_advance(sim, scalar, 40)
    assert lanes.tobytes() == scalar.tobytes()
    assert not np.array_equal(lanes, theta0)


def test_lane_blocked_sgd_follows_the_numpy_replay():
    sim = Simulation(small_config(run=dict(replicas=5), model=dict(width=8), training=dict(batch_size=1)))
    theta0 = sim.initial_params()
    theta = theta0.copy()
    _lanes_advance(sim, theta, 25)
    np.testing.assert_allclose(theta, _numpy_replay(sim, theta0, 25), rtol=FLOAT_RTOL, atol=1e-13)


@pytest.mark.parametrize("trainer", ["sgd B=1", "gd"])
def test_a_diverging_replica_stops_alone_as_in_the_one_replica_kernel(trainer):
    """Replica 1 of the first block starts with an output weight large enough that its loss gradient
    overflows at once: it stops at step 0 with its parameters untouched; the three others of its block
    go on one by one from there, and every replica ends as the one-replica kernel leaves it."""
    sim = Simulation(small_config(run=dict(replicas=8), model=dict(width=8), training=TRAINERS[trainer]))
    theta0 = sim.initial_params()
    theta0[1, sim.config.model.offsets()["a"]:] = 1e308  # sum_i a_i h_i overflows
    lanes, scalar = theta0.copy(), theta0.copy()
    status, failed = _lanes_advance(sim, lanes, 30)
    status_ref, failed_ref = _scalar_advance(sim, scalar, 30)
    np.testing.assert_array_equal(status, status_ref)
    np.testing.assert_array_equal(failed, failed_ref)
    assert status.tolist() == [0, 1, 0, 0, 0, 0, 0, 0] and failed[1] == 0
    assert lanes.tobytes() == scalar.tobytes()
    np.testing.assert_array_equal(lanes[1], theta0[1])
