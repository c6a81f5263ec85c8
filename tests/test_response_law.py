"""The response-law kind (``dynsim.response_law_experiment``) against independent references:

* constant amplitude with each replica's initial NTK = the lazy (linearised) network of
  ``dynsim.theory.lazy`` (its spectral solution, from the SymPy-derived NTK), to rounding;
* SGD: the compiled law against a NumPy replay of the same Philox batch draws (``dynsim.rng``), and
  a wide network trained by the same SGD draws tracks it (the lazy limit, sample path by sample path);
* the kernels: the M-output empirical NTK against finite differences, the arc-cosine kernel against
  Monte Carlo over relu features; a power-law amplitude against its closed form;
* the kind's boundaries: run, resume bit for bit, info, refusals that name the field.
"""
import dataclasses

import numpy as np
import pytest

from dynsim import kinds
from dynsim.cli import main as dynsim_main
from dynsim.config import dump_toml
from dynsim.models.multi import evaluate_outputs
from dynsim.models.response_law import network_ntk, parametric_kernel
from dynsim.response_law_experiment import ResponseLawRun
from dynsim.rng import STREAM_BATCH, index_at
from dynsim.spec import ConfigError
from dynsim.store import RunReader
from dynsim.theory import empirical_ntk, lazy_gd, network_outputs

from conftest import SEED

NETWORK = dict(input_dim=1, width=16, activation="tanh", bias_std=1.0)
TASK = dict(kind="encoding", n_train=8, n_test=6, n_probes=12, n_sources=3)


def _law(tmp_path, name="law", *, model=None, training=None, record=None, run=None, task=None):
    tables = dict(run=dict(seed=SEED, replicas=3, steps=120) | (run or {}),
                  model=dict(kind="response_law") | NETWORK | (model or {}),
                  task=TASK | (task or {}),
                  training=dict(method="gd", eta=0.1) | (training or {}),
                  record=dict(n_records=8) | (record or {}))
    path = tmp_path / f"{name}.toml"
    path.write_text(dump_toml(tables))
    return path


def _run(cfg_path, out):
    assert dynsim_main(["run", str(cfg_path), "-o", str(out), "-q", "--overwrite"]) == 0
    return RunReader(out)


def test_constant_amplitude_with_the_initial_ntk_is_the_lazy_network(tmp_path):
    cfg_path = _law(tmp_path, record=dict(observables=["loss_train", "output", "response", "late_response"]))
    config = kinds.load_config(cfg_path)
    network = config.model.network
    with _run(cfg_path, tmp_path / "law.h5") as rd:
        steps, output, response, loss = rd.steps, rd.observable("output")[..., 0], rd.observable("response"), \
            rd.observable("loss_train")
        late = rd.observable("late_response")
        data = rd.data()
    x_train, y, x_probe, src = data.x_train, data.y_train, data.x_probe, data.source_index
    eta = config.training.eta
    for r, theta in enumerate(network.init_params(SEED, config.run.replicas)):
        k_tt, k_pt = empirical_ntk(network, theta, x_train, x_train), empirical_ntk(network, theta, x_probe, x_train)
        lazy = lazy_gd(k_tt, k_pt, network_outputs(network, theta, x_train), network_outputs(network, theta, x_probe),
                       y, eta, steps)
        # the spectral solution and 120 iterated steps agree to rounding: ~1e-14 on O(1) outputs
        np.testing.assert_allclose(output[:, r], lazy.f_other, rtol=0, atol=1e-11)
        assert np.abs(output[:, r]).max() < 10  # a stable step (eta lambda_max / P < 2): no blow-up compared
        residual = lazy.f_train - y
        np.testing.assert_allclose(loss[:, r], 0.5 * np.mean(residual ** 2, axis=1), rtol=1e-10, atol=1e-14)
        lazy_response = -eta * residual[:, src, None] * k_pt[:, src].T[None]
        np.testing.assert_allclose(response[:, r], lazy_response, rtol=0, atol=1e-11)
        # plasticity: eta |f_t(x_k) - y_k| Theta_0(x_k, x_k) on the never-trained test samples
        x_test = data.x_test
        on_test = lazy_gd(k_tt, empirical_ntk(network, theta, x_test, x_train), network_outputs(network, theta, x_train),
                          network_outputs(network, theta, x_test), y, eta, steps).f_other
        expected = eta * np.abs(on_test - data.y_test) * np.diagonal(empirical_ntk(network, theta, x_test, x_test))
        np.testing.assert_allclose(late[:, r], expected, rtol=0, atol=1e-11)
    assert loss[-1].max() < 0.5 * loss[0].min()  # it learned: the comparison is not of two constants


def test_sgd_law_replays_the_philox_batches_and_a_wide_network_follows_it(tmp_path):
    """The law's SGD takes the network's batch draws: a NumPy replay with ``index_at`` matches it, and a
    wide NTK-scaled network trained by the same SGD stays within its lazy error of the law's path."""
    wide = dict(width=2048, scaling="ntk")
    training = dict(method="sgd", batch_size=2, eta=0.2)
    cfg_path = _law(tmp_path, model=wide, training=training, record=dict(observables=["output"]),
                    run=dict(steps=200))
    config = kinds.load_config(cfg_path).resolved()
    runner = ResponseLawRun(config)
    with _run(cfg_path, tmp_path / "law.h5") as rd:
        law = rd.observable("output")[..., 0]
        steps = rd.steps
    # NumPy replay of f <- f - (eta / B) K[:, batch] (f[batch] - y[batch]) with the Philox draws
    kernel, y, n_train = runner.kernel[..., 0, 0], runner.data.y_train, runner.data.x_train.shape[0]
    f = runner.initial_params()
    replay = {0: f[:, runner.probe0:].copy()}
    for s in range(steps[-1]):
        for r in range(config.run.replicas):
            batch = [index_at(np.uint64(SEED), r, STREAM_BATCH, s, b, n_train) for b in range(2)]
            f[r] -= 0.2 / 2 * kernel[r][:, batch] @ (f[r, batch] - y[batch])
        if s + 1 in steps:
            replay[s + 1] = f[:, runner.probe0:].copy()
    np.testing.assert_allclose(law, np.stack([replay[s] for s in steps]), rtol=0, atol=1e-12)
    # the network with the same seed: same initial function, same batches
    net_path = tmp_path / "net.toml"
    net_path.write_text(dump_toml(dict(run=dict(seed=SEED, replicas=3, steps=200), model=NETWORK | wide, task=TASK,
                                       training=training, record=dict(n_records=8, observables=["output"]))))
    with _run(net_path, tmp_path / "net.h5") as rd:
        net = rd.observable("output")[..., 0]
    moved = np.linalg.norm(net[-1] - net[0])
    # the lazy error of a width-2048 net after 200 steps: 0.15 % of how far its function moved (measured);
    # the law on other batches of the same size (epoch shuffles) is off by the SGD noise: 6.4 % (measured)
    assert np.linalg.norm(net[-1] - law[-1]) < 0.01 * moved
    other = _law(tmp_path, "other", model=wide, training=training | dict(sampling="without_replacement"),
                 record=dict(observables=["output"]), run=dict(steps=200))
    with _run(other, tmp_path / "other.h5") as rd:
        assert np.linalg.norm(net[-1] - rd.observable("output")[-1, ..., 0]) > 0.03 * moved


def test_network_ntk_of_m_outputs_is_the_jacobian_product_by_finite_differences():
    network = dataclasses.replace(kinds.get("simple").config_class().model, input_dim=2, width=5, outputs=3,
                                  bias_std=0.7, output_bias=True)
    theta = network.init_params(SEED, 1)[0]
    x1, x2 = np.random.default_rng(SEED).normal(size=(4, 2)), np.random.default_rng(SEED + 1).normal(size=(3, 2))

    def jacobian(x):  # central differences of evaluate_outputs, [K, M, n_params]
        h, out = 1e-6, np.empty((len(x), 3, network.n_params))
        for j in range(network.n_params):
            e = np.zeros(network.n_params)
            e[j] = h
            out[:, :, j] = (evaluate_outputs(network, theta + e, x) - evaluate_outputs(network, theta - e, x)) / (2 * h)
        return out
    expected = np.einsum("amp,bnp->abmn", jacobian(x1), jacobian(x2))
    # central differences of O(1) outputs with h = 1e-6: ~1e-9 error per entry
    np.testing.assert_allclose(network_ntk(network, theta, x1, x2), expected, rtol=0, atol=1e-7)
    one = dataclasses.replace(network, outputs=1, output_bias=False)
    theta1 = one.init_params(SEED, 1)[0]
    np.testing.assert_allclose(network_ntk(one, theta1, x1, x2)[:, :, 0, 0], empirical_ntk(one, theta1, x1, x2),
                               rtol=1e-12, atol=1e-12)


def test_parametric_kernels_against_their_definitions():
    rng = np.random.default_rng(SEED)
    x1, x2 = rng.normal(size=(3, 2)), rng.normal(size=(4, 2))
    dist = np.linalg.norm(x1[:, None] - x2[None], axis=2)
    np.testing.assert_allclose(parametric_kernel("gaussian", x1, x2, 2.0, 0.5), 2.0 * np.exp(-dist ** 2 / 0.5),
                               rtol=1e-12)
    np.testing.assert_allclose(parametric_kernel("exponential", x1, x2, 2.0, 0.5), 2.0 * np.exp(-dist / 0.5),
                               rtol=1e-12)
    # arc-cosine of order 1 = 2 E_w[relu(w . x~) relu(w . x~')], w ~ N(0, I), x~ = (x, 1) (Cho & Saul 2009)
    w = rng.normal(size=(400_000, 3))
    a, b = np.column_stack([x1, np.ones(3)]), np.column_stack([x2, np.ones(4)])
    monte_carlo = 2.0 * np.maximum(a @ w.T, 0) @ np.maximum(b @ w.T, 0).T / len(w)
    # 4e5 samples: relative standard error ~0.3 %
    np.testing.assert_allclose(parametric_kernel("arccos", x1, x2, 1.0, 1.0), monte_carlo, rtol=0.02)


def test_power_law_amplitude_on_one_sample_is_the_product_of_its_steps(tmp_path):
    """One training sample, squared loss, a Gaussian kernel (k(x_s, x_s) = k0): each step multiplies the
    residual by 1 - eta A(t) k0, A(t) = A0 (1 + t / tau)^-beta at t = step * eta."""
    model = dict(kernel="gaussian", kernel_scale=1.5, amplitude="power_law", amplitude_scale=0.8,
                 amplitude_tau=2.0, amplitude_beta=0.7, initial="zero")
    cfg_path = _law(tmp_path, model=model, task=dict(n_train=1, n_sources=1, n_test=0),
                    record=dict(observables=["loss_train", "amplitude"]), run=dict(steps=400))
    with _run(cfg_path, tmp_path / "law.h5") as rd:
        steps, loss, amp = rd.steps, rd.observable("loss_train")[:, 0], rd.observable("amplitude")[:, 0]
        y = rd.data().y_train[0]
    eta = 0.1
    a = 0.8 * (1 + eta * np.arange(400) / 2.0) ** -0.7
    residual = -y * np.concatenate([[1.0], np.cumprod(1 - eta * a * 1.5)])
    # |f - y| to rounding of f (O(1)) itself: 1e-14 absolute, whatever the residual has decayed to
    np.testing.assert_allclose(np.sqrt(2 * loss), np.abs(residual[steps]), rtol=0, atol=1e-14)
    assert np.abs(residual[-1]) < 1e-4  # it decayed: the product is tested over a real range
    np.testing.assert_allclose(amp, 0.8 * (1 + eta * steps / 2.0) ** -0.7, rtol=1e-14)


def test_law_with_the_initial_ntk_resumes_bit_for_bit(tmp_path, monkeypatch):
    cfg_path = _law(tmp_path, training=dict(method="sgd", batch_size=3), model=dict(outputs=2),
                    run=dict(steps=300), record=dict(checkpoint_steps=50))
    whole = tmp_path / "whole.h5"
    _run(cfg_path, whole).close()
    cut = tmp_path / "cut.h5"
    original = ResponseLawRun.advance

    def interrupted(self, params, s0, s1, status, failed_step):
        if s0 >= 150:
            raise KeyboardInterrupt
        original(self, params, s0, s1, status, failed_step)
    monkeypatch.setattr(ResponseLawRun, "advance", interrupted)
    assert dynsim_main(["run", str(cfg_path), "-o", str(cut), "-q"]) != 0
    monkeypatch.setattr(ResponseLawRun, "advance", original)
    assert dynsim_main(["resume", str(cut), "-q"]) == 0
    with RunReader(whole) as a, RunReader(cut) as b:
        assert b.status["code"] == "completed"
        for name in a.observable_names:
            np.testing.assert_array_equal(a.observable(name), b.observable(name))
        assert a.observable("response_outputs").shape[-1] == 2


def test_info_and_refusals_name_the_field(tmp_path, capsys):
    cfg_path = _law(tmp_path, model=dict(kernel="arccos", kernel_scale=2.0))
    out = tmp_path / "law.h5"
    _run(cfg_path, out).close()
    capsys.readouterr()
    assert dynsim_main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "model       response_law:" in info and "kernel=arccos" in info and "[f:grid,outputs]" in info
    cases = [(dict(model=dict(kernel="ntk_file")), "model.reference_file"),
             (dict(model=dict(kernel_step=5)), "model.kernel_step"),
             (dict(model=dict(amplitude_beta=0.5)), "model.amplitude_beta"),
             (dict(training=dict(weight_decay=0.1)), "training.weight_decay"),
             (dict(training=dict(method="langevin")), "training.method"),
             (dict(record=dict(observables=["ntk"]), model=dict(outputs=2)), "record.observables")]
    for tables, field in cases:
        with pytest.raises(ConfigError) as err:
            kinds.load_config(_law(tmp_path, "bad", **tables))
        assert err.value.field == field, (tables, err.value)


def test_reference_file_must_be_the_same_data(tmp_path):
    net = tmp_path / "net.toml"
    net.write_text(dump_toml(dict(run=dict(seed=SEED + 1, replicas=3, steps=20),
                                  model=NETWORK, task=TASK | dict(kind="teacher"), training=dict(method="gd"),
                                  record=dict(n_records=3, observables=["ntk"], params=True))))
    _run(net, tmp_path / "net.h5").close()
    cfg_path = _law(tmp_path, model=dict(amplitude="file", reference_file=str(tmp_path / "net.h5")))
    with pytest.raises(ConfigError) as err:
        ResponseLawRun(kinds.load_config(cfg_path))
    assert err.value.field == "model.reference_file" and "other data" in str(err.value)


@pytest.fixture(scope="module")
def network_file(tmp_path_factory):
    """A simple-network run recording its NTK, responses, outputs and parameters: the law's reference."""
    tmp = tmp_path_factory.mktemp("reference")
    path = tmp / "net.toml"
    path.write_text(dump_toml(dict(run=dict(seed=SEED, replicas=3, steps=400), model=NETWORK, task=TASK,
                                   training=dict(method="gd", eta=0.1),
                                   record=dict(n_records=8, params=True,
                                               observables=["loss_train", "output", "ntk", "response"]))))
    _run(path, tmp / "net.h5").close()
    return tmp / "net.h5"


def test_file_amplitude_and_file_kernel_are_the_networks(tmp_path, network_file):
    """'file' amplitude: at the network's record steps, the law's A(t) is that record's mean NTK diagonal
    over its value at t = 0; 'ntk_file': the law's kernel is the NTK of the recorded parameters at the
    kernel step, rescaled to the initial NTK's trace on the training inputs (SymPy-derived NTK)."""
    common = dict(reference_file=str(network_file))
    law = _law(tmp_path, model=common | dict(kernel="ntk_file", kernel_step=200, amplitude="file"),
               record=dict(observables=["ntk", "amplitude", "output"]), run=dict(steps=400))
    with _run(law, tmp_path / "law.h5") as rd:
        amp, ntk_law = rd.observable("amplitude"), rd.observable("ntk")
    config = kinds.load_config(law)
    with RunReader(network_file) as net:
        diag = np.einsum("trpp->trp", net.observable("ntk")).mean(axis=2)
        steps, theta, data = net.steps, net.trajectory(), net.data()
    np.testing.assert_allclose(amp, diag / diag[0], rtol=1e-12)
    k = int(np.argmin(np.abs(steps - 200)))
    network = config.model.network
    for r in range(3):
        trace0 = np.trace(empirical_ntk(network, theta[0, r], data.x_train, data.x_train))
        tracek = np.trace(empirical_ntk(network, theta[k, r], data.x_train, data.x_train))
        expected = empirical_ntk(network, theta[k, r], data.x_probe, data.x_probe) * trace0 / tracek
        # amplitude x kernel at every record, the kernel fixed at the kernel step
        np.testing.assert_allclose(ntk_law[:, r], amp[:, r, None, None] * expected[None], rtol=1e-10)
    assert abs(diag[-1] / diag[0] - 1).max() > 0.01  # the amplitude moved: the file's values are used


def test_report_compares_the_law_with_its_reference(tmp_path, network_file):
    from analysis.report import write_report
    from analysis.response_law import compare_files

    law = _law(tmp_path, model=dict(reference_file=str(network_file)), run=dict(steps=400),
               record=dict(observables=["output", "response", "loss_train"]))
    out = tmp_path / "law.h5"
    _run(law, out).close()
    text = write_report([str(out)], tmp_path / "report").read_text()
    assert "law vs network" in text and "function error" in text and "boundary positions" in text
    comparison = compare_files(out, network_file)
    with RunReader(out) as a, RunReader(network_file) as b:
        f_law, f_net = a.observable("output"), b.observable("output")
    error = np.linalg.norm((f_law - f_net)[-1].reshape(3, -1), axis=1) / np.linalg.norm(f_net[-1].reshape(3, -1),
                                                                                        axis=1)
    np.testing.assert_allclose(comparison.function_error[-1], error, rtol=1e-12)
    # at t = 0 the law starts from the network's own function: no error at all
    assert np.abs(comparison.function_error[0]).max() < 1e-14
