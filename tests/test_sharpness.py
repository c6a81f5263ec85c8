"""Exact Hessian-vector products of a deep MLP's training loss (``analysis.sharpness``) against
independent references: the gradient against the compiled back-propagation of ``dynsim.models.deep``,
H v against central differences of that compiled gradient, the symmetry u.Hv = v.Hu, and the top
eigenvalue against the dense Hessian's (built column by column, checked against finite differences).
"""
import numpy as np
import pytest

from analysis.sharpness import hessian_vector, loss_and_gradient, top_eigenvalue
from dynsim.models.deep import DeepMLP, sample_gradient

from conftest import SEED


def _problem(activation, bias=True, depth=2, width=5):
    arch = DeepMLP(depth=depth, width=width, activation=activation, bias=bias, bias_std=0.3 if bias else 0.0
                   ).architecture(3, 4)
    rng = np.random.default_rng(SEED)
    x, labels = rng.standard_normal((12, 3)), rng.integers(0, 4, 12)
    return arch, arch.init_params(SEED, 1)[0], x, labels


def _compiled_gradient(arch, theta, x, labels):
    n = arch.n_units
    pre, post, delta, prob = np.empty(n), np.empty(n), np.empty(n), np.empty(arch.classes)
    g = np.zeros(arch.n_params)
    loss = 0.0
    for row, label in zip(x, labels):
        loss += sample_gradient(theta, row, int(label), arch.layer_table(), arch.activation_code, pre, post, delta,
                                prob, 1.0 / len(x), g)
    return loss / len(x), g


@pytest.mark.parametrize("activation", ["tanh", "relu", "sigmoid", "erf", "softplus"])
def test_gradient_and_hessian_vector_products_against_the_compiled_gradient(activation):
    arch, theta, x, labels = _problem(activation)
    loss, grad = loss_and_gradient(arch, theta, x, labels)
    ref_loss, ref_grad = _compiled_gradient(arch, theta, x, labels)
    assert loss == pytest.approx(ref_loss, rel=1e-12)
    np.testing.assert_allclose(grad, ref_grad, rtol=0, atol=1e-14)
    rng = np.random.default_rng(SEED + 1)
    u, v = rng.standard_normal(arch.n_params), rng.standard_normal(arch.n_params)
    hv = hessian_vector(arch, theta, x, labels, v)
    h = 1e-5  # central differences: error ~h^2 |third derivative| ~1e-10 on O(1) entries
    fd = (_compiled_gradient(arch, theta + h * v, x, labels)[1] - _compiled_gradient(arch, theta - h * v, x, labels)[1]) \
        / (2 * h)
    if activation == "relu":  # piecewise linear: exact away from a kink, which no pre-activation crosses here
        np.testing.assert_allclose(hv, fd, rtol=0, atol=1e-8)
    else:
        np.testing.assert_allclose(hv, fd, rtol=0, atol=1e-8 * max(1.0, np.abs(fd).max()))
    hu = hessian_vector(arch, theta, x, labels, u)
    assert u @ hv == pytest.approx(v @ hu, rel=1e-10)  # the Hessian is symmetric


def test_top_eigenvalue_is_the_dense_hessians():
    arch, theta, x, labels = _problem("tanh", depth=2, width=4)
    dense = np.stack([hessian_vector(arch, theta, x, labels, e) for e in np.eye(arch.n_params)])
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=1e-12)
    eigenvalues = np.linalg.eigvalsh(dense)
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    # power iteration converges at the ratio of the two largest |eigenvalues|: 500 steps reach 1e-6
    assert top_eigenvalue(arch, theta, x, labels, iterations=2000, tol=1e-12) == pytest.approx(largest, rel=1e-6)
