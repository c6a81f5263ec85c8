"""Adversarial examples and transfer between replicas (#10 part B): dynsim.adversarial, analysis.transfer.

References: the closed-form minimal flipping perturbation of a linear classifier, finite
differences and a NumPy re-computation of the input gradient and of the NTK, and a reduced
ensemble run where transfer must beat the random control by a stated margin.
"""
import numpy as np
import pytest

from analysis.transfer import analyse_transfer, off_diagonal_mean, pair_specific, pair_values, transfer_section
from dynsim import adversarial as adv
from dynsim.config import Config, RecordSpec, RunSpec
from dynsim.simple_experiment import Simulation
from dynsim.integrators import TrainerSpec
from dynsim.models.simple import SimpleNet
from dynsim.tasks import TaskSpec


def _linear_classifier():
    model = SimpleNet(input_dim=5, width=7, activation="linear", output_bias=True)
    params = model.init_params(3, 2)
    params[:, -1] = 0.1
    blocks = model.unpack(params[0])
    w = (model.output_scale * blocks["a"]) @ blocks["W"]
    return model, params, w


@pytest.mark.parametrize("norm,order", [("linf", 1), ("l2", 2)])
def test_fgsm_flips_a_linear_classifier_exactly_at_the_closed_form_distance(norm, order):
    """For f = w.x + b the smallest L_inf (L2) perturbation that flips the class is |f| / |w|_1 (|w|_2),
    and FGSM's direction attains it: eps just below leaves every input's class, just above flips it."""
    model, params, w = _linear_classifier()
    x = np.random.default_rng(0).normal(size=(40, 5))
    f = adv.outputs(model, params[:1], x)[0]
    y = np.where(f > 0, 1.0, -1.0)
    need = np.abs(f) / np.linalg.norm(w, order)
    for factor, flipped in ((1 - 1e-9, False), (1 + 1e-9, True)):  # 1e-9: far above rounding (~1e-15)
        for k in range(len(x)):
            moved = adv.craft(model, params[:1], x[k:k + 1], y[k:k + 1], [need[k] * factor], norm=norm)
            assert (adv.outputs(model, params[:1], moved[0, 0])[0, 0] * y[k] <= 0) == flipped


def test_input_gradient_and_jacobian_against_finite_differences_and_numpy():
    model = SimpleNet(input_dim=3, width=6, activation="tanh", output_bias=True, bias_std=0.5)
    params = model.init_params(5, 2)
    x = np.random.default_rng(1).normal(size=(4, 3))
    f, grad = adv.input_gradients(model, params, x)
    h = 1e-6
    for d in range(3):
        step = np.zeros(3)
        step[d] = h
        fd = (adv.outputs(model, params, x + step) - adv.outputs(model, params, x - step)) / (2 * h)
        # central differences: error ~ h^2 f''' ~ 1e-12 plus rounding ~ eps / h ~ 1e-10
        np.testing.assert_allclose(grad[..., d], fd, atol=1e-8)
    blocks = model.unpack(params[1])
    pre = x @ blocks["W"].T + blocks["b"]
    np.testing.assert_allclose(f[1], model.output_scale * np.tanh(pre) @ blocks["a"] + blocks["c"][0], rtol=1e-13)
    jac = adv.parameter_jacobians(model, params, x)
    ref = np.zeros_like(jac[1])
    gb = model.unpack(ref)  # views into ref: fill the NumPy gradient block by block
    for k in range(len(x)):
        row = model.unpack(ref[k])
        sech2 = 1 - np.tanh(pre[k]) ** 2
        row["a"][...] = model.output_scale * np.tanh(pre[k])
        row["b"][...] = model.output_scale * blocks["a"] * sech2
        row["W"][...] = np.outer(model.output_scale * blocks["a"] * sech2, x[k])
        row["c"][...] = 1.0
    del gb
    np.testing.assert_allclose(jac[1], ref, rtol=1e-12, atol=1e-15)
    align = adv.ntk_alignment(model, params, x)
    np.testing.assert_allclose(np.diagonal(align), 1.0, rtol=1e-14)
    np.testing.assert_allclose(align, align.T, rtol=1e-14)


def test_pgd_stays_in_the_ball_and_is_at_least_as_strong_as_fgsm():
    model = SimpleNet(input_dim=4, width=16, activation="tanh", bias_std=0.5)
    params = model.init_params(2, 6)
    x = np.random.default_rng(2).normal(size=(60, 4))
    y = np.where(adv.outputs(model, params[:1], x)[0] > 0, 1.0, -1.0)
    eps = np.array([0.05, 0.2, 0.5])
    for norm in ("linf", "l2"):
        moved = adv.craft(model, params, x, y, eps, norm=norm, steps=10)
        delta = moved - x[None, None]
        size = np.abs(delta).max(axis=3) if norm == "linf" else np.linalg.norm(delta, axis=3)
        assert np.all(size <= eps[None, :, None] * (1 + 1e-12))
        fgsm, _ = adv.transfer_matrix(model, params, x, y, eps, norm=norm, steps=1)
        pgd, _ = adv.transfer_matrix(model, params, x, y, eps, norm=norm, steps=10)
        white_fgsm = np.array([np.diagonal(t).mean() for t in fgsm])
        white_pgd = np.array([np.diagonal(t).mean() for t in pgd])
        assert np.all(white_pgd >= white_fgsm - 0.02)  # per input PGD can lose; on average it may not by > 2 %


def test_matrix_helpers():
    m = np.array([[1.0, 0.2, 0.4], [0.6, 1.0, 0.0], [0.0, 0.8, 1.0]])
    assert off_diagonal_mean(m) == pytest.approx(2.0 / 6)
    np.testing.assert_allclose(pair_values(m), [0.4, 0.2, 0.4])
    # an exactly additive matrix (source + target effects, any diagonal) has no pair-specific part
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=6), rng.normal(size=6)
    additive = 0.3 + a[:, None] + b[None, :] + np.diag(rng.normal(size=6))
    off = ~np.eye(6, dtype=bool)
    np.testing.assert_allclose(pair_specific(additive)[off], 0.0, atol=1e-12)
    bump = additive.copy()
    bump[1, 4] += 1.0
    assert pair_specific(bump)[1, 4] == pytest.approx(pair_specific(bump).max())
    with pytest.raises(ValueError, match="norm"):
        adv.craft(SimpleNet(), SimpleNet().init_params(0, 1), np.zeros((1, 1)), [1.0], [0.1], norm="l3")


@pytest.fixture(scope="module")
def ensemble_run(tmp_path_factory):
    """12 replicas of one small network trained on a teacher-sign task from different seeds."""
    config = Config(run=RunSpec(seed=4, replicas=12, steps=4000),
                    model=SimpleNet(input_dim=6, width=24, activation="tanh", bias_std=0.5),
                    task=TaskSpec(kind="teacher_sign", n_train=128, n_test=160, teacher_width=6, n_probes=4,
                                  n_sources=2),
                    training=TrainerSpec(method="sgd", eta=0.1, batch_size=8, loss="cross_entropy"),
                    record=RecordSpec(n_records=8, two_time_waits=3, two_time_lags=2,
                                      observables=("loss_train", "accuracy_test")))
    path = tmp_path_factory.mktemp("transfer") / "ens.h5"
    assert Simulation(config).run(path, progress=False).ok
    return config, path


def test_reduced_transfer_experiment(ensemble_run, tmp_path):
    """Adversarial examples crafted on one replica fool the others far more often than random
    perturbations of the same norm, and transfer is higher between replicas whose input gradients align."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    config, path = ensemble_run
    lines, numbers = transfer_section(path, tmp_path, plt)
    e = numbers["reference"]
    white, cross = numbers["pgd_l2"]
    # measured at this size: white-box 0.49, transfer ~0.47, control ~0.05; margins: transfer at
    # least half the white-box rate and at least 3x the random control
    from dynsim.store import RunReader

    with RunReader(path) as rd:
        params, data = rd.dataset("params/final"), rd.data()
    res = analyse_transfer(config.model, params, data.x_test, data.y_test, 0.0)
    control = res.control["l2"].mean(axis=1)[e]
    assert cross[e] > 0.5 * white[e]
    assert cross[e] > 3 * control
    # pair-specific transfer tracks pair-specific gradient alignment: measured +0.18, +0.31, +0.26 on
    # seeds 4, 5, 6 of this reduced run (66 pairs) and +0.30 on the full config (496 pairs); the raw
    # correlation is confounded by source strength and target fragility (-0.55, +0.36, -0.11)
    rho, _ = numbers["rho_gradient_pair_specific"]
    assert rho > 0.1
    assert len(numbers["over_time"]) == 4  # three waiting times and the end
    assert (tmp_path / "ens_transfer_eps.png").stat().st_size > 1000
    assert any("Spearman" in line for line in lines)


def test_teacher_sign_task_and_label_noise():
    from dynsim.tasks import make_dataset

    clean = make_dataset(TaskSpec(kind="teacher_sign", n_train=400, n_test=10), 5, "tanh", 9)
    noisy = make_dataset(TaskSpec(kind="teacher_sign", n_train=400, n_test=10, label_noise=0.1), 5, "tanh", 9)
    np.testing.assert_array_equal(clean.x_train, noisy.x_train)
    assert np.sum(clean.y_train != noisy.y_train) == 40  # exactly round(0.1 * 400) labels flipped
    np.testing.assert_array_equal(clean.y_test, noisy.y_test)
    assert set(np.unique(clean.y_train)) == {-1.0, 1.0}
    from dynsim.spec import ConfigError

    with pytest.raises(ConfigError) as e:
        TaskSpec(kind="teacher", label_noise=0.1)
    assert e.value.field == "task.label_noise"
