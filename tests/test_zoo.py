"""Transfer across model families (``analysis.zoo``) against independent references: input gradients
and the summed-logit NTK against finite differences of the compiled forward pass, FGSM against the
closed-form flip distance of a linear classifier, and the pair statistics on matrices of known
structure (the Mantel test's null calibration, a planted association, block means)."""
import numpy as np
import pytest

from analysis.zoo import (Model, craft, family_matrix, input_gradient, mantel, ntk_matrix, rho_interval,
                          transfer_matrix)
from dynsim.models.deep import DeepMLP

from conftest import SEED


def _model(activation="tanh", depth=2, width=5, bias=True):
    arch = DeepMLP(depth=depth, width=width, activation=activation, bias=bias, bias_std=0.3 if bias else 0.0
                   ).architecture(3, 4)
    return Model("f", 0, arch, arch.init_params(SEED, 1)[0])


def _loss(model, x, labels):
    z = model.logits(x)
    z = z - z.max(axis=1, keepdims=True)
    return -(z[np.arange(len(x)), labels] - np.log(np.exp(z).sum(axis=1)))


@pytest.mark.parametrize("activation", ["tanh", "relu", "erf"])
def test_input_gradient_and_ntk_against_finite_differences(activation):
    model = _model(activation)
    rng = np.random.default_rng(SEED)
    x, labels = rng.standard_normal((6, 3)), rng.integers(0, 4, 6)
    loss, grad = input_gradient(model, x, labels)
    np.testing.assert_allclose(loss, _loss(model, x, labels), rtol=1e-12)
    h = 1e-6
    fd = np.stack([(_loss(model, x + h * e, labels) - _loss(model, x - h * e, labels)) / (2 * h)
                   for e in np.eye(3)], axis=1)
    np.testing.assert_allclose(grad, fd, rtol=0, atol=1e-8)
    # NTK summed over the logits: sum_k J_k J_k^T with J_k = d z_k / d theta by central differences
    jac = np.empty((6, 4, model.arch.n_params))
    for p in range(model.arch.n_params):
        e = np.zeros(model.arch.n_params)
        e[p] = h
        up, down = Model("f", 0, model.arch, model.theta + e), Model("f", 0, model.arch, model.theta - e)
        jac[:, :, p] = (up.logits(x) - down.logits(x)) / (2 * h)
    np.testing.assert_allclose(ntk_matrix(model, x), np.einsum("akp,bkp->ab", jac, jac), rtol=0, atol=1e-7)


def test_fgsm_flips_a_linear_classifier_exactly_beyond_its_margin():
    """Two classes, logits z_1 - z_0 = w . x + c: the L2 FGSM step of size eps moves the margin by
    eps |w|, so an input flips exactly when eps > |w . x + c| / |w|; L_inf: when eps > |.| / |w|_1."""
    arch = DeepMLP(depth=1, width=3, activation="linear").architecture(3, 2)
    theta = np.zeros(arch.n_params)
    b = arch.unpack(theta)
    b["W1"][...] = np.eye(3)
    w, c = np.array([0.6, -1.2, 0.4]), 0.3
    b["Wout"][:, 1] = w
    b["bout"][1] = c
    model = Model("linear", 0, arch, theta)
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((400, 3))
    labels = model.predict(x)  # every input correctly classified by construction
    margin = np.abs(x @ w + c)
    for norm, scale in (("l2", np.linalg.norm(w)), ("linf", np.abs(w).sum())):
        for eps in (0.2, 0.7):
            flipped = model.predict(craft(model, x, labels, eps, norm=norm)) != labels
            distance = margin / scale
            clear = np.abs(distance - eps) > 1e-9
            np.testing.assert_array_equal(flipped[clear], (distance < eps)[clear])
            white_box = transfer_matrix([model], x, labels, eps, norm=norm)[0, 0]
            assert white_box == pytest.approx(np.mean(distance < eps))


def test_mantel_test_is_calibrated_and_finds_a_planted_association():
    rng = np.random.default_rng(SEED)
    n = 12
    small = []
    for trial in range(40):  # unrelated pair matrices: the p-value is (close to) uniform
        a, b = rng.random((n, n)), rng.random((n, n))
        small.append(mantel(a, b + b.T, permutations=300, seed=trial)[1] < 0.05)
    assert np.mean(small) <= 0.15
    # a model-level latent position: pairs close in it share more; transfer = closeness + noise
    position = rng.standard_normal(n)
    closeness = -np.abs(position[:, None] - position[None, :])
    transfer = closeness + 0.3 * rng.standard_normal((n, n))
    rho, p = mantel(transfer, closeness, permutations=2000)
    assert rho > 0.5 and p < 0.01
    low, high = rho_interval(transfer, closeness, n_boot=300)
    assert low < rho < high and low > 0.2


def test_family_matrix_is_the_mean_over_distinct_model_pairs():
    families = ["a"] * 3 + ["b"] * 2
    t = np.arange(25, dtype=float).reshape(5, 5)
    names, out = family_matrix(t, families, n_boot=200)
    assert names == ["a", "b"]
    within_a = t[:3, :3][~np.eye(3, dtype=bool)].mean()
    assert out[0, 0, 0] == pytest.approx(within_a) and out[0, 1, 0] == pytest.approx(t[:3, 3:].mean())
    assert out[0, 1, 1] <= out[0, 1, 0] <= out[0, 1, 2]
