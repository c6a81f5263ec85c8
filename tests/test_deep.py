"""The deep MLP (issue 9): backprop, trainers, neuron modes and basins against independent references.

References are written here in NumPy, independently of the compiled kernels: a matrix-form forward
and backward pass of the same network, central finite differences of the NumPy loss, closed forms
for hand-made networks (mode fractions) and for a linear classifier (the sample-space basin is the
distance to its hyperplane).
"""
import math

import numpy as np
import pytest

from conftest import SEED
from dynsim.kinds import stored_config
from dynsim.config import dump_toml
from dynsim.kinds import parse_config
from dynsim.kinds import make_runner, resume
from dynsim.models.deep import DeepMLP, sample_gradient
from dynsim.observables.deep import _modes, _weight_direction, effective_rank, sample_basin, weight_basin
from dynsim.rng import STREAM_NOISE, fill_normals
from dynsim.spec import ConfigError
from dynsim.store import RunReader

_ACT = {"relu": lambda z: np.maximum(z, 0.0), "tanh": np.tanh, "linear": lambda z: z,
        "softplus": lambda z: np.logaddexp(z, 0.0)}
_ACT_PRIME = {"relu": lambda z: (z > 0).astype(float), "tanh": lambda z: 1.0 - np.tanh(z) ** 2,
              "linear": np.ones_like, "softplus": lambda z: 1.0 / (1.0 + np.exp(-z))}


def numpy_loss_and_grad(arch, theta, x, labels):
    """Mean softmax cross-entropy over the rows of x and its gradient, by matrix backprop in NumPy."""
    blocks = arch.unpack(theta)
    names = [name for name, _ in arch.layout if name.startswith("W")]
    act, act_prime = _ACT[arch.model.activation], _ACT_PRIME[arch.model.activation]
    hs, zs = [x], []
    for k, name in enumerate(names):
        z = hs[-1] @ blocks[name] + (blocks["b" + name[1:]] if arch.model.bias else 0.0)
        zs.append(z)
        hs.append(act(z) if k < len(names) - 1 else z)
    logits = hs[-1]
    top = logits.max(axis=1, keepdims=True)
    p = np.exp(logits - top)
    p /= p.sum(axis=1, keepdims=True)
    n = x.shape[0]
    loss = np.mean(np.log(np.exp(logits - top).sum(axis=1)) + top[:, 0] - logits[np.arange(n), labels])
    grads = {}
    delta = p.copy()
    delta[np.arange(n), labels] -= 1.0
    delta /= n
    for k in range(len(names) - 1, -1, -1):
        name = names[k]
        grads[name] = hs[k].T @ delta
        if arch.model.bias:
            grads["b" + name[1:]] = delta.sum(axis=0)
        if k > 0:
            delta = (delta @ blocks[name].T) * act_prime(zs[k - 1])
    return loss, np.concatenate([grads[name].ravel() for name, _ in arch.layout])


def compiled_grad(arch, theta, x, labels):
    n = arch.n_units
    pre, post, delta = np.empty(n), np.empty(n), np.empty(n)
    prob, g = np.empty(arch.classes), np.zeros(arch.n_params)
    loss = 0.0
    for mu in range(x.shape[0]):
        loss += sample_gradient(theta, x[mu], labels[mu], arch.layer_table(), arch.activation_code, pre, post, delta,
                                prob, 1.0 / x.shape[0], g)
    return loss / x.shape[0], g


@pytest.mark.parametrize("depth,activation,bias", [(1, "tanh", True), (3, "relu", True), (20, "tanh", False),
                                                   (3, "softplus", True)])
def test_backprop_matches_numpy_and_finite_differences(depth, activation, bias):
    rng = np.random.default_rng(SEED + depth)
    model = DeepMLP(depth=depth, width=5, activation=activation, bias=bias, bias_std=0.3 if bias else 0.0,
                    init="xavier" if depth == 20 else "he")
    arch = model.architecture(4, 3)
    theta = arch.init_params(SEED, 2)[1]
    x = rng.standard_normal((6, 4))
    labels = rng.integers(0, 3, 6)
    loss, grad = compiled_grad(arch, theta, x, labels)
    ref_loss, ref_grad = numpy_loss_and_grad(arch, theta, x, labels)
    scale = np.abs(ref_grad).max()
    # two float64 evaluations of the same sums in different orders: agreement to ~1e-15 relative
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-12 * scale)
    # central differences with h = 1e-5: truncation O(h^2 |l'''|) ~ 1e-10 and rounding ~ 1e-16/h ~ 1e-11;
    # relu's kinks are at measure zero for these Gaussian inputs (checked: no pre-activation within 1e-3 of 0)
    h = 1e-5
    fd = np.empty(arch.n_params)
    for j in range(arch.n_params):
        e = np.zeros(arch.n_params)
        e[j] = h
        fd[j] = (numpy_loss_and_grad(arch, theta + e, x, labels)[0] - numpy_loss_and_grad(arch, theta - e, x, labels)[0]) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-7 * max(scale, 1e-3))


def test_init_variances_and_layout():
    """He / Xavier / custom variances per layer, measured on 4,000 replicas' draws (std error ~1.6 % per layer)."""
    for init, extra, var in (("he", {}, lambda fi, fo: 2.0 / fi), ("xavier", {}, lambda fi, fo: 2.0 / (fi + fo)),
                             ("custom", {"weight_var": 0.5}, lambda fi, fo: 0.5 / fi)):
        arch = DeepMLP(depth=2, width=7, init=init, **extra).architecture(3, 4)
        assert arch.param_layout == "W1:3,7;b1:7;W2:7,7;b2:7;Wout:7,4;bout:4"
        params = arch.init_params(SEED, 4000)
        blocks = arch.unpack(params)
        for name, (fi, fo) in (("W1", (3, 7)), ("W2", (7, 7)), ("Wout", (7, 4))):
            assert blocks[name].var() == pytest.approx(var(fi, fo), rel=0.06)
        assert np.all(blocks["b1"] == 0.0)


# sigma' of each activation in NumPy (an independent transcription of the definitions)
_SLOPES = {"relu": lambda z: (z > 0).astype(float), "tanh": lambda z: 1.0 / np.cosh(z) ** 2,
           "sigmoid": lambda z: np.exp(-z) / (1.0 + np.exp(-z)) ** 2,
           "erf": lambda z: 2.0 / np.sqrt(np.pi) * np.exp(-z * z), "softplus": lambda z: 1.0 / (1.0 + np.exp(-z)),
           "linear": lambda z: np.ones_like(z)}
_MAX_SLOPE = {"relu": 1.0, "tanh": 1.0, "sigmoid": 0.25, "erf": 2.0 / np.sqrt(np.pi), "softplus": 1.0, "linear": 1.0}


def _pre_activations(arch, theta, x):
    """[sample, unit] pre-activations of the kernel's forward pass."""
    from dynsim.models.deep import forward

    pre, post = np.empty(arch.n_units), np.empty(arch.n_units)
    rows = []
    for row in x:
        forward(theta, row, arch.layer_table(), arch.activation_code, pre, post)
        rows.append(pre.copy())
    return np.array(rows)


def _mode_fractions(arch, theta, x, activation="relu"):
    """Compiled mode counting (``_modes``) fed with NumPy counts of samples in each unit's high-gain part
    (sigma' >= 1/2 max sigma'): rows order-preserving, dead, order-breaking, gain fraction."""
    z = _pre_activations(arch, theta, x)
    gain = np.sum(_SLOPES[activation](z) >= 0.5 * _MAX_SLOPE[activation], axis=0).astype(float)
    out = np.empty((4, arch.depth))
    _modes(arch.layer_table(), gain, len(x), out)
    return out


def test_neuron_modes_on_hand_made_networks():
    arch = DeepMLP(depth=2, width=4, activation="relu", bias=False).architecture(3, 2)
    x = np.random.default_rng(SEED).uniform(0.1, 1.0, (20, 3))  # all inputs positive
    theta = np.abs(arch.init_params(SEED, 1)[0]) + 0.01
    # positive weights on positive inputs: every pre-activation > 0, every neuron order-preserving
    np.testing.assert_array_equal(_mode_fractions(arch, theta, x)[:3], [[1, 1], [0, 0], [0, 0]])
    # negative first layer: layer 1 all dead; layer 2 then sees zeros only (pre-activation 0: flat piece)
    blocks = arch.unpack(theta)
    blocks["W1"][...] *= -1.0
    np.testing.assert_array_equal(_mode_fractions(arch, theta, x)[:3], [[0, 0], [1, 1], [0, 0]])
    # layer 1: unit 0 reads x0 - 0.5 (inputs both sides: order-breaking), unit 1 reads -x0 (dead), units 2, 3 read +x
    blocks["W1"][...] = 0.0
    blocks["W1"][0, 0], blocks["W1"][1, 1] = 1.0, -1.0
    blocks["W1"][0, 2], blocks["W1"][2, 3] = 1.0, 1.0
    arch_b = DeepMLP(depth=2, width=4, activation="relu", bias=True).architecture(3, 2)
    theta_b = np.zeros(arch_b.n_params)
    bb = arch_b.unpack(theta_b)
    bb["W1"][...] = blocks["W1"]
    bb["b1"][0] = -0.5
    bb["W2"][...] = 1.0
    frac = _mode_fractions(arch_b, theta_b, x)
    np.testing.assert_array_equal(frac[:3, 0], [0.5, 0.25, 0.25])
    np.testing.assert_array_equal(frac[:3, 1], [1.0, 0.0, 0.0])  # sums of non-negative units, some positive
    below = np.mean(x[:, 0] - 0.5 > 0)  # unit 0's share of samples on its increasing piece
    assert frac[3, 0] == pytest.approx((below + 0 + 1 + 1) / 4)


@pytest.mark.parametrize("activation,edge", [("tanh", 0.8814), ("sigmoid", 1.7627), ("erf", 0.8326)])
def test_saturating_units_have_modes_too(activation, edge):
    """A saturating unit's high-gain part is |z| <= edge (sigma' >= 1/2 its maximum): unit 0 reads 0.1 x0
    (always inside: order-preserving), unit 1 reads 10 + x0 (always saturated: flat), unit 2 reads
    5 x0 (both: mixed). The measure is not constant for a saturating activation."""
    np.testing.assert_array_less([0.5 * _MAX_SLOPE[activation]], _SLOPES[activation](np.array([edge * 0.999])))
    np.testing.assert_array_less(_SLOPES[activation](np.array([edge * 1.001])), [0.5 * _MAX_SLOPE[activation]])
    arch = DeepMLP(depth=1, width=3, activation=activation, bias=True).architecture(1, 2)
    theta = np.zeros(arch.n_params)
    b = arch.unpack(theta)
    b["W1"][0, :] = [0.1, 1.0, 5.0]
    b["b1"][:] = [0.0, 10.0, 0.0]
    x = np.linspace(-1, 1, 41)[:, None]
    frac = _mode_fractions(arch, theta, x, activation)
    np.testing.assert_allclose(frac[:3, 0], [1 / 3, 1 / 3, 1 / 3])
    inside = np.mean(np.abs(5.0 * x[:, 0]) <= edge)
    assert frac[3, 0] == pytest.approx((1.0 + 0.0 + inside) / 3)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "erf", "softplus"])
def test_mode_counts_of_the_measure_kernel_match_numpy_and_move_with_saturation(activation):
    """The counts the record-time kernel makes (``_metrics``) equal the NumPy ones on random networks; a
    network whose first layer is scaled up 8x (so its tanh, sigmoid or erf units saturate) has fewer
    samples in its units' high-gain parts than at its initialisation, and its neurons are flat or
    mixed: the measure responds to saturation (softplus, like relu, only to the sign of z)."""
    from dynsim.observables.deep import MAX_SLOPE, MODE_GAIN, _metrics

    arch = DeepMLP(depth=3, width=16, activation=activation).architecture(4, 3)
    rng = np.random.default_rng(SEED)
    x, labels = rng.standard_normal((64, 4)), rng.integers(0, 3, 64)
    fractions = []
    for scale in (1.0, 8.0):
        theta = arch.init_params(SEED, 1)[0]
        arch.unpack(theta)["W1"][...] *= scale
        n = arch.n_units
        pre, post, prob, gain = np.empty(n), np.empty(n), np.empty(3), np.empty(n)
        _metrics(theta, x, labels, arch.layer_table(), arch.activation_code, pre, post, prob, gain,
                 MODE_GAIN * MAX_SLOPE[arch.activation_code])
        z = _pre_activations(arch, theta, x)
        expected = np.sum(_SLOPES[activation](z) >= 0.5 * _MAX_SLOPE[activation], axis=0)
        from dynsim.models.deep import L_OUT

        hidden = slice(arch.layer_table()[0, L_OUT], arch.layer_table()[-1, L_OUT])  # the hidden layers' units
        np.testing.assert_array_equal(gain[hidden], expected[hidden])
        fractions.append(_mode_fractions(arch, theta, x, activation))
    if activation == "softplus":  # its high-gain part is z >= 0: scaling the weights keeps every sign
        np.testing.assert_array_equal(fractions[0][:, 0], fractions[1][:, 0])
        return
    # first layer: fewer samples in the high-gain part, and most neurons flat or mixed (the earlier
    # definition called every one of them order-preserving)
    assert fractions[1][3, 0] < fractions[0][3, 0] - 0.2, fractions
    assert fractions[1][1, 0] + fractions[1][2, 0] > 0.9, fractions


def _linear_classifier(normal, offset):
    """A depth-1 linear-activation MLP on D = 2 whose decision boundary is normal . x + offset = 0."""
    arch = DeepMLP(depth=1, width=2, activation="linear").architecture(2, 2)
    theta = np.zeros(arch.n_params)
    b = arch.unpack(theta)
    b["W1"][...] = np.eye(2)
    b["Wout"][:, 1] = normal  # logit_1 - logit_0 = normal . x + offset
    b["bout"][1] = offset
    return arch, theta


def test_sample_basin_of_a_linear_classifier_is_the_distance_to_its_hyperplane():
    normal, offset = np.array([0.6, -0.8]), 0.3   # unit normal
    arch, theta = _linear_classifier(normal, offset)
    rng = np.random.default_rng(SEED)
    u = rng.standard_normal((4000, 2))
    u /= np.linalg.norm(u, axis=1, keepdims=True)
    pre, post, moved = np.empty(arch.n_units), np.empty(arch.n_units), np.empty(2)
    max_radius, bisections = 8.0, 40
    for x0 in (np.array([1.0, 0.5]), np.array([-0.7, 1.2]), np.array([2.0, -1.0])):
        margin = normal @ x0 + offset
        r = sample_basin(theta, x0, u, max_radius, bisections, arch.layer_table(), arch.activation_code, pre, post, moved)
        # exact value for these directions: the first crossing over all of them, d / max_u(-sign(m) n.u)
        exact = abs(margin) / np.max(-np.sign(margin) * (u @ normal))
        assert r <= exact and exact - r <= max_radius * 2.0 ** -bisections * 1.0001
        # and with 4,000 directions in 2-D the largest cosine is 1 - O(1e-6): r is the distance |m| / |n|
        assert r == pytest.approx(abs(margin), rel=1e-4)


def test_weight_basin_is_the_largest_passing_perturbation():
    """The bisection's answer passes the predicate, and one resolution step more fails it (NumPy accuracy)."""
    normal, offset = np.array([0.6, -0.8]), 0.05
    arch, theta = _linear_classifier(normal, offset)
    theta = theta + 0.05 * np.random.default_rng(3).standard_normal(arch.n_params)
    x = np.random.default_rng(SEED).standard_normal((200, 2))
    labels = (x @ normal + offset > 0).astype(np.int64)
    layers, act = arch.layer_table(), arch.activation_code
    pre, post = np.empty(arch.n_units), np.empty(arch.n_units)
    moved, direction = np.empty(arch.n_params), np.empty(arch.n_params)
    n_dir, max_eps, bisections, fraction, seed, replica = 3, 4.0, 30, 0.9, np.uint64(SEED), 2
    eps = weight_basin(theta, x, labels, layers, act, seed, replica, n_dir, max_eps, bisections, fraction, pre, post,
                       moved, direction)

    def accuracy(th):
        return np.mean(np.argmax(arch.logits(th, x), axis=1) == labels)
    need = fraction * accuracy(theta)
    dirs = []
    for k in range(n_dir):
        d = np.empty(arch.n_params)
        _weight_direction(theta, layers, seed, replica, k, d)
        blocks, tb = arch.unpack(d), arch.unpack(theta)
        for layer in ("1", "out"):  # layer-wise relative: |d_l| = |theta_l| (weights and bias together)
            assert math.hypot(np.linalg.norm(blocks["W" + layer]), np.linalg.norm(blocks["b" + layer])) == pytest.approx(
                math.hypot(np.linalg.norm(tb["W" + layer]), np.linalg.norm(tb["b" + layer])), rel=1e-12)
        dirs.append(d)
    assert 0.0 < eps < max_eps
    assert all(accuracy(theta + eps * d) >= need for d in dirs)
    step = max_eps * 2.0 ** -bisections
    assert any(accuracy(theta + (eps + 2 * step) * d) < need for d in dirs)


def test_effective_rank_closed_forms():
    rng = np.random.default_rng(SEED)
    # two orthogonal directions with equal spread: singular values equal, rank exp(log 2) = 2
    basis = np.linalg.qr(rng.standard_normal((6, 2)))[0].T
    coef = np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]], dtype=float)
    assert effective_rank(coef @ basis) == pytest.approx(2.0, rel=1e-12)
    features = rng.standard_normal((3, 10, 5))
    s = np.linalg.svd(features - features.mean(axis=1, keepdims=True), compute_uv=False)
    p = s / s.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(effective_rank(features), np.exp(-(p * np.log(p)).sum(axis=1)), rtol=1e-12)


def _config(**tables):
    base = dict(run=dict(seed=SEED, replicas=2, steps=30),
                model=dict(kind="mlp", input_dim=3, depth=2, width=6, activation="tanh", bias_std=0.2),
                task=dict(kind="gaussian_mixture", classes=3, n_train=12, n_test=10),
                training=dict(method="gd", eta=0.2),
                record=dict(n_records=4, basin_samples=2, basin_directions=4, basin_bisections=6, noise_inputs=6,
                            weight_basin_samples=12, weight_basin_directions=2, block_records=2))
    for name, values in tables.items():
        base[name] = {**base[name], **values}
    return parse_config(dump_toml(base))


def test_gd_with_weight_decay_and_sde_sgd_noise_match_numpy(tmp_path):
    cfg = _config(run=dict(steps=3), training=dict(method="gd", eta=0.3, weight_decay=0.01))
    sim = make_runner(cfg)
    result = sim.run(tmp_path / "gd.h5", progress=False)
    assert result.ok
    arch, x, labels = sim.arch, sim.data.x_train, sim.labels_train
    theta = sim.initial_params()
    for _ in range(3):
        theta = np.array([(1 - 0.3 * 0.01) * th - 0.3 * numpy_loss_and_grad(arch, th, x, labels)[1] for th in theta])
    # 3 steps of the same arithmetic in a different order: ~1e-15 relative per operation
    np.testing.assert_allclose(result.params, theta, rtol=1e-11, atol=1e-13)

    cfg = _config(run=dict(steps=1), training=dict(method="sde", noise="sgd", batch_size=4, eta=0.1, dt=0.05))
    sim = make_runner(cfg)
    result = sim.run(tmp_path / "sde.h5", progress=False)
    theta0 = sim.initial_params()
    p = x.shape[0]
    for r in range(2):
        per_sample = np.array([numpy_loss_and_grad(arch, theta0[r], x[mu:mu + 1], labels[mu:mu + 1])[1]
                               for mu in range(p)])
        xi = np.empty(p)
        fill_normals(np.uint64(SEED), np.uint64(r), np.uint64(STREAM_NOISE), np.uint64(0), xi)
        centred = per_sample - per_sample.mean(axis=0)  # G = [g_mu - gbar] / sqrt(P); B = sqrt(eta / B) G
        noise = math.sqrt(0.1 / 4) * centred.T @ xi / math.sqrt(p)
        expected = theta0[r] - 0.05 * per_sample.mean(axis=0) + math.sqrt(0.05) * noise
        np.testing.assert_allclose(result.params[r], expected, rtol=1e-11, atol=1e-13)


def test_deep_run_records_and_resumes_bit_identically(tmp_path):
    cfg = _config(run=dict(steps=60), training=dict(method="sgd", batch_size=3, eta=0.2),
                  record=dict(n_records=12, checkpoint_seconds=0.0))
    reference = tmp_path / "ref.h5"
    make_runner(cfg).run(reference, progress=False)
    sim = make_runner(cfg)
    sim.chunk_steps = 5
    calls = {"n": 0}
    inner = sim.advance

    def interrupt(*args):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return inner(*args)
    sim.advance = interrupt
    out = tmp_path / "cut.h5"
    assert sim.run(out, progress=False).code == "interrupted"
    assert resume(out, progress=False).ok
    with RunReader(reference) as a, RunReader(out) as b:
        assert a.model_attrs["kind"] == "mlp" and a.model_attrs["depth"] == 2
        np.testing.assert_array_equal(a.dataset("params/final"), b.dataset("params/final"))
        for name in a.observable_names:
            np.testing.assert_array_equal(a.observable(name), b.observable(name))
        acc = a.observable("accuracy_train")
        modes = a.observable("mode_order_preserving") + a.observable("mode_dead") + a.observable("mode_order_breaking")
        config = stored_config(a)
        final = a.dataset("params/final")
        # the noise inputs and basin samples are the file's named inputs, sized as the observables' axes
        inputs = a.inputs()
        noise_x, basin_index = inputs["noise_x"], inputs["basin_index"]
        assert a.dataset("probes/x").shape[0] == 0 and a.dataset("sources/index").shape == (0,)
    n_train = 12  # _config's task.n_train; basin_samples = 2 evenly spread: the first and the last sample
    assert basin_index.tolist() == [0, n_train - 1]
    assert noise_x.shape == (6, 3)  # record.noise_inputs = 6 (<= n_train), model.input_dim = 3
    x_train = make_runner(config).data.x_train  # noise lies in the training set's per-coordinate range
    assert np.all(noise_x >= x_train.min(axis=0)) and np.all(noise_x <= x_train.max(axis=0))
    # the recorded accuracy is the kernel's; recompute the last one in NumPy from the final parameters
    sim = make_runner(config)
    np.testing.assert_allclose(acc[-1], [np.mean(np.argmax(sim.arch.logits(th, sim.data.x_train), 1) == sim.labels_train)
                                         for th in final])
    np.testing.assert_allclose(modes, 1.0)


def test_the_record_time_measurement_lets_other_threads_run():
    """A Dask worker's heartbeat is a Python thread: a measurement that held the GIL for its whole call
    (over 5 min at depth 16 x width 512) got its worker killed by the scheduler. While a measurement of
    ~0.3 s runs on another thread, this thread must keep running: with the kernel compiled without
    ``nogil`` its longest pause is the whole call (measured 0.39 s, against 0.01 s as shipped, on a
    loaded 2-core machine); the bound, a third of the call, leaves room for the Python parts of the
    measurement and for the load."""
    import threading
    import time

    cfg = _config(run=dict(replicas=2), model=dict(input_dim=16, depth=3, width=128),
                  task=dict(n_train=800, n_test=10),
                  record=dict(basin_samples=8, basin_directions=8, basin_bisections=8, weight_basin_samples=200,
                              weight_basin_directions=4))
    sim = make_runner(cfg)
    params = sim.initial_params()
    buffers = sim.allocate_buffers()
    sim.measure(params, buffers)  # compiles (or loads from the cache), outside the timed call
    start = time.perf_counter()
    sim.measure(params, buffers)
    duration = time.perf_counter() - start
    worker = threading.Thread(target=sim.measure, args=(params, buffers))
    ticks = [time.perf_counter()]
    worker.start()
    while worker.is_alive():
        time.sleep(0.001)
        ticks.append(time.perf_counter())
    worker.join()
    assert duration > 0.15, f"the measurement is too short ({duration:.3f} s) to tell a held GIL apart"
    assert np.max(np.diff(ticks)) < duration / 3


@pytest.mark.parametrize("tables,field", [
    (dict(run=dict(backend="cuda")), "run.backend"),
    (dict(training=dict(loss="squared")), "training.loss"),
    (dict(model=dict(widths=[4, 4, 4])), "model.widths"),
    (dict(training=dict(method="sgd", batch_size=50)), "training.batch_size"),
    (dict(model=dict(weight_var=1.0)), "model.weight_var"),
    (dict(task=dict(kind="digits", classes=10, n_train=1700, n_test=200)), "task.n_train"),
])
def test_bad_deep_configs_name_the_field(tables, field):
    with pytest.raises(ConfigError) as err:
        _config(**tables)
    assert err.value.field == field


def test_softmax_loss_is_refused_for_the_simple_network():
    with pytest.raises(ConfigError) as err:
        parse_config('[training]\nloss = "softmax_cross_entropy"\n')
    assert err.value.field == "training.loss"


def test_cli_runs_and_describes_a_deep_config(tmp_path):
    from conftest import run_cli

    good = _config(run=dict(steps=20)).to_toml()
    (tmp_path / "deep.toml").write_text(good)
    proc = run_cli("run", tmp_path / "deep.toml", "-o", tmp_path / "deep.h5", "-q")
    assert proc.returncode == 0, proc.stderr
    info = run_cli("info", tmp_path / "deep.h5")
    assert info.returncode == 0 and "model       mlp:" in info.stdout and "mode_dead" in info.stdout
    (tmp_path / "bad.toml").write_text(good.replace('loss = "softmax_cross_entropy"', 'loss = "squared"'))
    bad = run_cli("run", tmp_path / "bad.toml", "-o", tmp_path / "bad.h5")
    assert bad.returncode == 2 and "training.loss" in bad.stderr and not (tmp_path / "bad.h5").exists()
