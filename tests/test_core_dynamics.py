"""Trainers against independent references: NumPy replays, a closed form, a conservation law."""
import numpy as np
import pytest

from dynsim import rng as R
from dynsim.simple_experiment import Simulation

from conftest import FLOAT_RTOL, SEED, small_config
from numpy_reference import forward_and_gradients, loss_and_derivative


def _advance(sim, steps):
    params = sim.initial_params()
    initial = params.copy()
    status = np.zeros(params.shape[0], dtype=np.int8)
    failed = np.full(params.shape[0], -1, dtype=np.int64)
    sim.advance(params, 0, steps, status, failed)
    assert not status.any()
    return initial, params


def _numpy_replay(sim, theta0, steps):
    """Replay the trainer in NumPy for every replica, drawing indices and noise from dynsim.rng."""
    cfg = sim.config
    attrs = cfg.model.attributes()
    t = cfg.training
    x, y = sim.data.x_train, sim.data.y_train
    p = x.shape[0]
    batch = t.effective_batch(p)
    seed = np.uint64(cfg.run.seed)
    noise_std = np.sqrt(2 * t.eta * t.temperature)
    out = theta0.copy()
    for r in range(out.shape[0]):
        theta = out[r]
        for s in range(steps):
            if t.method == "gd" or (t.method == "langevin" and batch == p):
                idx = np.arange(p)
            elif t.sampling == "with_replacement":
                idx = np.array([R.index_at(seed, r, R.STREAM_BATCH, s, b, p) for b in range(batch)])
            else:
                idx = []
                for b in range(batch):
                    pos = s * batch + b
                    perm = np.empty(p, dtype=np.int64)
                    R.fill_permutation(seed, r, R.STREAM_PERMUTATION, pos // p, perm)
                    idx.append(perm[pos % p])
                idx = np.array(idx)
            f, grads = forward_and_gradients(theta, x[idx], attrs)
            _, dl = loss_and_derivative(f, y[idx], t.loss)
            theta[:] = (1.0 - t.eta * t.weight_decay) * theta - t.eta * (dl @ grads) / batch
            if noise_std > 0:
                theta += noise_std * np.array([R.normal_at(seed, r, R.STREAM_NOISE, s, j) for j in range(theta.size)])
    return out


@pytest.mark.parametrize("training,task", [
    (dict(method="gd", batch_size=None), {}),
    (dict(method="sgd", batch_size=1), {}),
    (dict(method="sgd", batch_size=3, sampling="without_replacement"), {}),
    (dict(method="sgd", batch_size=2, weight_decay=0.1), {}),
    (dict(method="langevin", batch_size=None, temperature=0.01), {}),
    (dict(method="langevin", batch_size=2, temperature=0.01), {}),
    (dict(method="sgd", batch_size=1, loss="cross_entropy"), dict(kind="random_labels")),
])
def test_trainer_matches_numpy_replay(training, task):
    sim = Simulation(small_config(training=training, task=task, model=dict(activation="softplus")))
    theta0, theta = _advance(sim, 25)
    expected = _numpy_replay(sim, theta0, 25)
    # 25 steps of ~100-term sums: rounding differences stay near 1e-15; FLOAT_RTOL (conftest) bounds them.
    np.testing.assert_allclose(theta, expected, rtol=FLOAT_RTOL, atol=1e-13)
    assert not np.allclose(theta, theta0)  # the replicas did move


def test_sgd_without_replacement_full_batch_equals_gd():
    """A batch of all P samples drawn without replacement is one epoch: the GD step, reordered."""
    gd = Simulation(small_config(training=dict(method="gd", batch_size=None)))
    sgd = Simulation(small_config(training=dict(method="sgd", batch_size=10, sampling="without_replacement")))
    _, a = _advance(gd, 30)
    _, b = _advance(sgd, 30)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14)  # only the summation order differs


def test_gd_on_linear_network_converges_to_least_squares():
    """f is linear in x, so GD's fixed point on the training set is the OLS fit (closed form)."""
    cfg = small_config(model=dict(activation="linear", width=4, input_dim=2, output_bias=True),
                       task=dict(kind="teacher", n_train=20, noise_std=0.3),
                       training=dict(method="gd", batch_size=None, eta=0.1), run=dict(replicas=2))
    sim = Simulation(cfg)
    _, theta = _advance(sim, 20000)
    x, y = sim.data.x_train, sim.data.y_train
    design = np.column_stack([x, np.ones(len(x))])
    beta, *_ = np.linalg.lstsq(design, y, rcond=None)
    for r in range(2):
        f, _ = forward_and_gradients(theta[r], x, cfg.model.attributes())
        # the residual of GD's geometric convergence after 20000 steps is far below 1e-9
        np.testing.assert_allclose(f, design @ beta, atol=1e-9)


def test_relu_balancedness_drift_is_first_order_in_eta():
    """a_i^2 - |w_i|^2 - b_i^2 is conserved by relu gradient flow; GD breaks it by O(eta) at fixed t."""
    def drift(eta, steps):
        cfg = small_config(model=dict(activation="relu", width=8, output_bias=False, bias_std=0.5),
                           training=dict(method="gd", batch_size=None, eta=eta), run=dict(replicas=4))
        sim = Simulation(cfg)
        theta0, theta = _advance(sim, steps)
        blocks0, blocks = cfg.model.unpack(theta0), cfg.model.unpack(theta)

        def q(b):
            return b["a"] ** 2 - np.sum(b["W"] ** 2, axis=-1) - b["b"] ** 2
        return np.max(np.abs(q(blocks) - q(blocks0))), np.max(np.abs(q(blocks0)))

    d1, scale = drift(0.04, 500)   # t = 20
    d2, _ = drift(0.02, 1000)      # same t, half the step
    assert d1 < 0.05 * scale       # conserved to a few percent at this eta
    # Euler's per-step violation is eta^2 |grad|^2, summed over t/eta steps: proportional to eta.
    assert 1.7 < d1 / d2 < 2.3


def test_langevin_noise_is_standard_normal_times_sqrt_2_eta_t():
    """One Langevin step minus the GD step from the same parameters is pure noise of variance 2 eta T."""
    eta, temperature = 0.05, 0.2
    common = dict(run=dict(replicas=400), model=dict(width=6))
    langevin = Simulation(small_config(training=dict(method="langevin", batch_size=None, eta=eta,
                                                     temperature=temperature), **common))
    gd = Simulation(small_config(training=dict(method="gd", batch_size=None, eta=eta), **common))
    _, a = _advance(langevin, 1)
    _, b = _advance(gd, 1)
    xi = ((a - b) / np.sqrt(2 * eta * temperature)).ravel()
    n = xi.size
    # mean 0 and variance 1 within 5 standard errors; independence of replicas' noise shows in the
    # correlation between replicas 0 and 1 being within 5/sqrt(dim) of zero
    assert abs(xi.mean()) < 5 / np.sqrt(n)
    assert abs(xi.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    per_replica = ((a - b)).reshape(400, -1)
    assert abs(np.corrcoef(per_replica[0], per_replica[1])[0, 1]) < 5 / np.sqrt(per_replica.shape[1])


def test_replica_trajectory_does_not_depend_on_ensemble_size():
    small = Simulation(small_config(run=dict(replicas=2)))
    large = Simulation(small_config(run=dict(replicas=5)))
    _, a = _advance(small, 30)
    _, b = _advance(large, 30)
    np.testing.assert_array_equal(a, b[:2])


def test_different_seeds_give_different_trajectories():
    _, a = _advance(Simulation(small_config(run=dict(seed=SEED))), 10)
    _, b = _advance(Simulation(small_config(run=dict(seed=SEED + 1))), 10)
    assert np.all(np.abs(a - b).max(axis=1) > 1e-3)
