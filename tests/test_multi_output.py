"""The simple network with M outputs on the M-region encoding task (#12).

References: a NumPy network written here from the documented ``param_layout`` string (a: outputs,width;
c: outputs), with hand-written gradients; finite differences; the task's region edges k / M.
"""
import numpy as np
import pytest

from analysis.regions import region_boundaries, region_map
from dynsim.config import Config, RecordSpec, RunSpec
from dynsim.simple_experiment import Simulation
from dynsim.integrators import TrainerSpec
from dynsim.losses import LOSSES, loss_derivative
from dynsim.models.multi import evaluate_outputs, output_jacobians
from dynsim.models.simple import SimpleNet
from dynsim.spec import ConfigError
from dynsim.store import RunReader
from dynsim.tasks import TaskSpec, make_dataset


def _blocks(theta, attrs):
    """W [N, D], b [N], a [M, N], c [M] from the layout string (the documented packing)."""
    sizes = {"width": int(attrs["width"]), "input_dim": int(attrs["input_dim"]), "outputs": int(attrs["outputs"]),
             "1": 1}
    out, pos = {}, 0
    for item in attrs["param_layout"].split(";"):
        name, dims = item.split(":")
        shape = tuple(sizes[d] for d in dims.split(","))
        n = int(np.prod(shape))
        out[name] = theta[pos:pos + n].reshape(shape)
        pos += n
    assert pos == theta.size
    return out["W"].T, out["b"], out["a"], out["c"]


def _numpy_forward(theta, attrs, x):
    W, b, a, c = _blocks(theta, attrs)
    z = x @ W.T + b
    return attrs["output_scale"] * np.tanh(z) @ a.T + c, z


def _numpy_gradient(theta, attrs, x, coefs):
    """sum_m coefs[m] d f_m(x) / d theta for one input x [D], packed like theta."""
    W, b, a, c = _blocks(theta, attrs)
    s = attrs["output_scale"]
    z = W @ x + b
    h, dh = np.tanh(z), 1 - np.tanh(z) ** 2
    back = s * (coefs @ a) * dh
    grads = {"W": np.outer(back, x).T, "b": back, "a": s * np.outer(coefs, h), "c": coefs}
    return np.concatenate([grads[item.split(":")[0]].ravel() for item in attrs["param_layout"].split(";")])


MODEL = SimpleNet(input_dim=2, width=6, activation="tanh", bias_std=0.7, output_bias=True, outputs=3)


def test_outputs_and_jacobians_against_numpy_and_finite_differences():
    attrs = MODEL.attributes()
    assert attrs["param_layout"] == "W:input_dim,width;b:width;a:outputs,width;c:outputs"
    theta = MODEL.init_params(4, 1)[0]
    theta[-3:] = [0.1, -0.2, 0.3]
    x = np.random.default_rng(0).normal(size=(5, 2))
    np.testing.assert_allclose(evaluate_outputs(MODEL, theta, x), _numpy_forward(theta, attrs, x)[0], rtol=1e-13,
                               atol=1e-15)  # outputs near 0: absolute rounding of O(1) sums
    jac = output_jacobians(MODEL, theta, x)
    for k in range(len(x)):
        for m in range(3):
            np.testing.assert_allclose(jac[k, m], _numpy_gradient(theta, attrs, x[k], np.eye(3)[m]), rtol=1e-12,
                                       atol=1e-15)
    h = 1e-6
    for j in (0, 7, 14, 20, MODEL.n_params - 1):
        e = np.zeros_like(theta)
        e[j] = h
        fd = (evaluate_outputs(MODEL, theta + e, x) - evaluate_outputs(MODEL, theta - e, x)) / (2 * h)
        np.testing.assert_allclose(jac[:, :, j], fd, atol=1e-8)  # central differences: h^2 and eps/h errors


def test_one_output_network_is_unchanged():
    one = SimpleNet(width=6, output_bias=True)
    assert one.param_layout == "W:input_dim,width;b:width;a:width;c:1"
    # output 0 of an M-output network draws the same initial weights as the one-output network
    many = SimpleNet(width=6, output_bias=True, outputs=3)
    n = one.n_params - 1  # W, b and a (output 0); c is 0 in both
    np.testing.assert_array_equal(one.init_params(2, 3)[:, :n], many.init_params(2, 3)[:, :n])


def _config(**kw):
    base = dict(run=RunSpec(seed=3, replicas=4, steps=3), model=MODEL,
                task=TaskSpec(kind="encoding", n_train=9, n_test=5, n_probes=4, n_sources=2),
                training=TrainerSpec(method="gd", eta=0.3, loss="sigmoid_squared"),
                record=RecordSpec(n_records=2, spacing="linear",
                                  observables=("loss_train", "accuracy_train", "ntk_outputs", "response_outputs",
                                               "output")))
    base.update(kw)
    return Config(**base)


def test_gd_steps_ntk_and_response_against_numpy(tmp_path):
    cfg = _config()
    path = tmp_path / "m.h5"
    assert Simulation(cfg).run(path, progress=False).ok
    with RunReader(path) as rd:
        attrs, data = rd.model_attrs, rd.data()
        theta0, theta3 = rd.dataset("params/initial"), rd.dataset("params/final")
        ntk, response, output = rd.observable("ntk_outputs"), rd.observable("response_outputs"), rd.observable("output")
        loss = rd.observable("loss_train")
    assert data.y_train.shape == (9, 3) and np.all(data.y_train.sum(axis=1) == -1.0)  # one +1, two -1 per row
    code = LOSSES["sigmoid_squared"]
    eta, P = 0.3, 9
    for r in range(4):
        theta = theta0[r].copy()
        for _ in range(3):  # GD on the sum over outputs of the per-output loss, mean over samples
            f, _ = _numpy_forward(theta, attrs, data.x_train)
            g = sum(_numpy_gradient(theta, attrs, data.x_train[mu],
                                    np.array([loss_derivative(f[mu, m], data.y_train[mu, m], code) for m in range(3)]))
                    for mu in range(P)) / P
            theta = theta - eta * g
        np.testing.assert_allclose(theta3[r], theta, rtol=1e-12, atol=1e-14)
        # the last record is at the final parameters: NTK [p, q, m, n] and response [s, p, m]
        jac = np.array([[_numpy_gradient(theta, attrs, xp, np.eye(3)[m]) for m in range(3)] for xp in data.x_probe])
        np.testing.assert_allclose(ntk[-1, r], np.einsum("pmj,qnj->pqmn", jac, jac), rtol=1e-11, atol=1e-14)
        f_probe = _numpy_forward(theta, attrs, data.x_probe)[0]
        np.testing.assert_allclose(output[-1, r], f_probe, rtol=1e-12)
        for s, (xs, ys) in enumerate(zip(data.x_source, data.y_source)):
            fs = _numpy_forward(theta, attrs, xs[None])[0][0]
            dl = np.array([loss_derivative(fs[m], ys[m], code) for m in range(3)])
            moved = theta - eta * _numpy_gradient(theta, attrs, xs, dl)
            expected = _numpy_forward(moved, attrs, data.x_probe)[0] - f_probe
            np.testing.assert_allclose(response[-1, r, s], expected, rtol=1e-9, atol=1e-14)
        f_train = _numpy_forward(theta, attrs, data.x_train)[0]
        p = 1 / (1 + np.exp(-f_train))
        target = (1 + data.y_train) / 2
        np.testing.assert_allclose(loss[-1, r], np.mean(np.sum((p - target) ** 2 / 2, axis=1)), rtol=1e-12)


def test_encoding_task_regions():
    data = make_dataset(TaskSpec(kind="encoding", n_train=8, n_test=0, labels="01"), 1, "tanh", 0, outputs=4)
    # cell-centred grid (k + 1/2) / 8: two points per region of width 1/4
    np.testing.assert_array_equal(np.argmax(data.y_train, axis=1), [0, 0, 1, 1, 2, 2, 3, 3])
    assert set(np.unique(data.y_train)) == {0.0, 1.0}


def test_region_boundaries_closed_form():
    x = np.linspace(0, 1, 101)
    # f_m = -(x - centre_m)^2: the argmax switches halfway between neighbouring centres
    centres = np.array([0.1, 0.4, 0.8])
    f = -(x[:, None] - centres) ** 2
    bounds = region_boundaries(x, f[None])[0]
    np.testing.assert_allclose(bounds, [0.25, 0.6], atol=1e-12)  # exact: f_m - f_n is linear in x
    assert np.isnan(region_boundaries(x, f[None, :, ::-1])[0]).all()  # regions out of order
    np.testing.assert_array_equal(region_map(f[None])[0][[0, 30, 99]], [0, 1, 2])


def test_reduced_encoding_run_carves_the_regions(tmp_path):
    """M = 4, D = 1: zero classification error on the training grid, and every boundary within 1/32
    (the training grid's spacing) of its edge k / 4."""
    cfg = Config(run=RunSpec(seed=0, replicas=8, steps=20_000),
                 model=SimpleNet(input_dim=1, width=32, activation="tanh", bias_std=1.0, weight_std=4.0, outputs=4),
                 task=TaskSpec(kind="encoding", n_train=32, n_test=0, n_probes=128, n_sources=2),
                 training=TrainerSpec(method="gd", eta=0.5, loss="cross_entropy"),
                 record=RecordSpec(n_records=20, observables=("loss_train", "accuracy_train", "output")))
    path = tmp_path / "enc4.h5"
    assert Simulation(cfg).run(path, progress=False).ok
    with RunReader(path) as rd:
        acc = rd.observable("accuracy_train")
        bounds = region_boundaries(rd.data().x_probe, rd.observable("output")[-1])
    assert np.all(acc[-1] == 1.0)
    assert np.all(np.abs(bounds - np.array([0.25, 0.5, 0.75])) < 1 / 32), bounds


@pytest.mark.parametrize("change,field", [
    (dict(task=TaskSpec(kind="teacher_sign")), "model.outputs"),
    (dict(training=TrainerSpec(method="sde")), "model.outputs"),
    (dict(run=RunSpec(precision="float32")), "model.outputs"),
    (dict(record=RecordSpec(observables=("ntk",))), "record.observables"),
])
def test_multi_output_config_errors(change, field):
    with pytest.raises(ConfigError) as e:
        _config(**change)
    assert e.value.field == field


def test_multi_output_observables_need_several_outputs():
    with pytest.raises(ConfigError) as e:
        Config(record=RecordSpec(observables=("ntk_outputs",)))
    assert e.value.field == "record.observables" and "'ntk'" in str(e.value)
    cfg = _config(record=RecordSpec())
    assert "ntk_outputs" in cfg.observables and "ntk" not in cfg.observables


def test_two_dimensional_encoding_on_a_probe_grid(tmp_path):
    """[0, 1]^2 with 3 regions along x_0: probes on a regular grid, and after training the grid's
    region map agrees with the regions almost everywhere (misses only next to the edges)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from analysis.regions import regions_section

    cfg = Config(run=RunSpec(seed=1, replicas=4, steps=4000),
                 model=SimpleNet(input_dim=2, width=32, activation="tanh", bias_std=1.0, weight_std=4.0, outputs=3),
                 task=TaskSpec(kind="encoding", n_train=96, n_test=0, n_probes=144, n_sources=2, probe_grid=True),
                 training=TrainerSpec(method="gd", eta=0.5, loss="cross_entropy"),
                 record=RecordSpec(n_records=8, observables=("loss_train", "accuracy_train", "output")))
    path = tmp_path / "enc2d.h5"
    assert Simulation(cfg).run(path, progress=False).ok
    with RunReader(path) as rd:
        probes = rd.data().x_probe
        assert rd.observable("accuracy_train")[-1].min() == 1.0
        lines, numbers, figures = regions_section(rd, "enc2d", tmp_path, plt)
    np.testing.assert_allclose(np.unique(probes[:, 0]), (np.arange(12) + 0.5) / 12)  # cell-centred 12 x 12
    assert len(np.unique(probes, axis=0)) == 144
    # 96 random training inputs place each edge to within ~1/30; a 12 x 12 grid then has at most a
    # column of probes per edge near it misassigned: agreement above 0.85
    assert numbers["grid_agreement_final"] > 0.85
    with pytest.raises(ConfigError) as e:
        TaskSpec(kind="encoding", n_probes=150, probe_grid=True)
    assert e.value.field == "task.probe_grid"
    with pytest.raises(ConfigError) as e:
        Config(task=TaskSpec(kind="encoding", n_probes=16, probe_grid=True))  # input_dim 1
    assert e.value.field == "task.probe_grid"
