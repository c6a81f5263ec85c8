"""Observables in a written file against a NumPy recomputation from the file's own parameters."""
import numpy as np
import pytest

from dynsim.simple_experiment import Simulation
from dynsim.store import RunReader

from conftest import FLOAT_RTOL, small_config
from numpy_reference import forward_and_gradients, loss_and_derivative, response


@pytest.fixture(scope="module")
def run_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("obs") / "run.h5"
    cfg = small_config(task=dict(kind="encoding", n_train=12, n_test=20, n_probes=6, n_sources=3),
                       model=dict(input_dim=1, width=7, activation="tanh"), run=dict(steps=60),
                       training=dict(method="sgd", batch_size=1, eta=0.1))
    result = Simulation(cfg).run(path, progress=False)
    assert result.ok
    return path


@pytest.mark.parametrize("record,params", [(0, "params/initial"), (-1, "params/final")])
def test_ntk_response_and_losses_match_numpy(run_file, record, params):
    with RunReader(run_file) as rd:
        theta_all = rd.dataset(params)
        attrs, training = rd.model_attrs, rd.training_attrs
        x_probe, x_src, y_src = rd.dataset("probes/x"), rd.dataset("sources/x"), rd.dataset("sources/y")
        x_train, y_train = rd.dataset("data/x_train"), rd.dataset("data/y_train")
        x_test, y_test = rd.dataset("data/x_test"), rd.dataset("data/y_test")
        obs = {n: rd.observable(n)[record] for n in rd.observable_names}
        assert np.array_equal(x_src, x_train[rd.dataset("sources/index")])
    eta, loss = float(training["eta"]), str(training["loss"])
    for r, theta in enumerate(theta_all):
        _, g = forward_and_gradients(theta, x_probe, attrs)
        np.testing.assert_allclose(obs["ntk"][r], g @ g.T, rtol=FLOAT_RTOL, atol=1e-14)
        exact, linear = response(theta, x_probe, x_src, y_src, eta, loss, attrs)
        np.testing.assert_allclose(obs["response"][r], exact, rtol=FLOAT_RTOL, atol=1e-14)
        np.testing.assert_allclose(obs["response_linear"][r], linear, rtol=FLOAT_RTOL, atol=1e-14)
        for split, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
            f, _ = forward_and_gradients(theta, x, attrs)
            np.testing.assert_allclose(obs[f"loss_{split}"][r], loss_and_derivative(f, y, loss)[0].mean(),
                                       rtol=FLOAT_RTOL)
            assert obs[f"accuracy_{split}"][r] == pytest.approx(np.mean(np.sign(f) == y), abs=1e-15)
        assert obs["param_norm"][r] == pytest.approx(np.linalg.norm(theta), rel=1e-14)


def test_time_axis_and_schema(run_file):
    with RunReader(run_file) as rd:
        steps, t = rd.steps, rd.times
        assert steps[0] == 0 and steps[-1] == 60 and np.all(np.diff(steps) > 0)
        np.testing.assert_array_equal(t, steps * 0.1)
        n_rec = len(steps)
        shapes = {n: rd.observable(n).shape for n in rd.observable_names}
        assert shapes["loss_train"] == (n_rec, 3)
        assert shapes["ntk"] == (n_rec, 3, 6, 6)
        assert shapes["response"] == shapes["response_linear"] == (n_rec, 3, 3, 6)
        assert rd.observable_dims("response") == ("record", "replica", "source", "probe")
        m = rd.model_attrs
        assert (m["kind"], m["activation"], m["input_dim"], m["width"]) == ("simple", "tanh", 1, 7)
        assert m["param_layout"] == "W:input_dim,width;b:width;a:width;c:1"
        assert m["output_scale"] == 1.0
        tr = rd.training_attrs
        assert (tr["method"], tr["eta"], tr["batch_size"], tr["loss"]) == ("sgd", 0.1, 1, "squared")
        for key in ("format", "format_version", "dynsim_version", "created", "git_commit", "numba_version",
                    "numpy_version", "h5py_version", "backend", "device"):
            assert key in rd.attrs
        assert rd.status["code"] == "completed"
        assert rd.checkpoint["step"] == 60 and rd.checkpoint["n_records"] == n_rec
        np.testing.assert_array_equal(rd.checkpoint["params"], rd.dataset("params/final"))


def test_response_linear_error_is_second_order_in_eta(tmp_path):
    """response - response_linear = O(eta^2): halving eta divides it by 4 (record 0: same parameters)."""
    def gap(eta, name):
        cfg = small_config(training=dict(method="gd", batch_size=None, eta=eta), run=dict(steps=1),
                           model=dict(activation="sigmoid", width=10))
        Simulation(cfg).run(tmp_path / name, progress=False)
        with RunReader(tmp_path / name) as rd:
            return np.max(np.abs(rd.observable("response")[0] - rd.observable("response_linear")[0]))
    g1, g2, g3 = gap(0.02, "a.h5"), gap(0.01, "b.h5"), gap(0.005, "c.h5")
    # ratios of a pure eta^2 term are exactly 4; the eta^3 correction moves them by O(eta) = 2 %
    assert 3.8 < g1 / g2 < 4.2 and 3.9 < g2 / g3 < 4.1
