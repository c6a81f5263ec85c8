"""The CUDA backend against the CPU backend (the reference) and the raw Philox draws.

Where these run. On an NVIDIA GPU when there is one; otherwise on numba's CUDA simulator, which
.ci/run selects with NUMBA_ENABLE_CUDASIM=1. numba reads that variable when numba.cuda is first
imported, so it has to be in the environment before Python starts (setting it from a test would
come too late and would leak into every subprocess); with neither a GPU nor the simulator the
module is skipped and says why. The simulator works with numba's built-in numba.cuda as well as
with the numba-cuda package, so CI needs only ``pip install ".[test]"``.

Tolerance. RTOL = 1e-12 relative (to the largest magnitude of the compared array), the issue's
requirement. On the simulator each kernel thread calls the same compiled functions as the CPU
backend, in the same order, so the results are bit-identical: the bound has no slack in which a
wrong replica, step, index or sample could hide (those show at O(1)). On a GPU the
transcendentals (libdevice) and FMA contraction differ from the CPU's by about an ulp per
operation; over the <= 40 steps of these width-4 networks that is expected to stay near 1e-14.
Integers (random indices, permutations, Philox words, status codes, failed steps) must be equal.
"""
import functools
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dynsim import rng as R
from dynsim.kinds import resume
from dynsim.simple_experiment import Simulation
from dynsim.engine.cuda import CudaBackend, cuda, simulator_active, unavailable_reason
from dynsim.observables import DEFAULT_OBSERVABLES, allocate
from dynsim.spec import ConfigError

from conftest import SEED, replace, small_config

REPO = Path(__file__).resolve().parents[1]
RTOL = 1e-12

_UNAVAILABLE = unavailable_reason()
pytestmark = pytest.mark.skipif(bool(_UNAVAILABLE), reason=(
    f"no GPU and no CUDA simulator: {_UNAVAILABLE} (.ci/run exports NUMBA_ENABLE_CUDASIM=1)"))


def tiny(**sections):
    """A config small enough for the simulator: 3 replicas, width 4, 2 inputs, 30 steps."""
    base = dict(run=dict(replicas=3, steps=30), model=dict(input_dim=2, width=4),
                task=dict(n_train=10, n_test=12, n_probes=5, n_sources=3))
    for name, values in sections.items():
        base[name] = {**base.get(name, {}), **values}
    return small_config(**base)


def pair(cfg):
    """A CPU simulation and the same one on the CUDA backend."""
    cpu = Simulation(cfg)
    gpu = Simulation(cfg)
    gpu.backend = CudaBackend()
    return cpu, gpu


def assert_close(actual, expected, what):
    finite = np.abs(expected[np.isfinite(expected)])
    scale = float(finite.max()) if finite.size else 0.0
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=RTOL * scale, equal_nan=True, err_msg=what)


def advance(sim, params, chunks):
    status = np.zeros(params.shape[0], dtype=np.int8)
    failed = np.full(params.shape[0], -1, dtype=np.int64)
    for s0, s1 in zip(chunks[:-1], chunks[1:]):
        sim.advance(params, s0, s1, status, failed)
    return status, failed


def test_backend_names_itself():
    backend = CudaBackend()
    assert backend.name == "cuda"
    if simulator_active():
        assert backend.device == "cuda simulator"
    else:
        assert "compute capability" in backend.device


# -- random numbers ------------------------------------------------------------------------------

STEPS = np.array([0, 1, 7, 2**32 + 5, R.MAX_STEPS - 1], dtype=np.int64)
N_DRAWS, N_PERM, N_INDEX = 5, 9, 7


def _draw_kernel():
    @cuda.jit
    def kernel(seed, steps, out_u, out_n, out_i, out_perm, kat_in, kat_out):
        r = cuda.grid(1)
        if r >= out_u.shape[0]:
            return
        for a in range(steps.shape[0]):
            for stream in range(4):
                for k in range(out_u.shape[3]):
                    out_u[r, a, stream, k] = R.uniform_at(seed, r, stream, steps[a], k)
                    out_n[r, a, stream, k] = R.normal_at(seed, r, stream, steps[a], k)
                    out_i[r, a, stream, k] = R.index_at(seed, r, stream, steps[a], k, N_INDEX)
            R.fill_permutation(seed, r, R.STREAM_PERMUTATION, steps[a], np.asarray(out_perm)[r, a])
        if r < kat_in.shape[0]:
            w0, w1, w2, w3 = R.philox4x32_10(kat_in[r, 0], kat_in[r, 1], kat_in[r, 2], kat_in[r, 3], kat_in[r, 4],
                                             kat_in[r, 5])
            kat_out[r, 0], kat_out[r, 1], kat_out[r, 2], kat_out[r, 3] = w0, w1, w2, w3

    return kernel


# Known-answer vectors of Philox4x32-10 from the Random123 distribution (kat_vectors), as in
# test_core_kernels: (counter words, key words) -> output words.
KAT = [((0, 0, 0, 0, 0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
       ((0xFFFFFFFF,) * 6, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
       ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344, 0xA4093822, 0x299F31D0),
        (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1))]


@pytest.mark.parametrize("seed", [SEED, 2**64 - 1])
def test_random_draws_are_the_cpu_draws(seed):
    replicas = 4
    shape = (replicas, STEPS.size, 4, N_DRAWS)
    out_u, out_n, out_i = np.zeros(shape), np.zeros(shape), np.zeros(shape, dtype=np.int64)
    out_perm = np.zeros((replicas, STEPS.size, N_PERM), dtype=np.int64)
    kat_in = np.array([c for c, _ in KAT], dtype=np.uint64)
    kat_out = np.zeros((len(KAT), 4), dtype=np.uint64)
    d = [cuda.to_device(a) for a in (STEPS, out_u, out_n, out_i, out_perm, kat_in, kat_out)]
    _draw_kernel()[1, replicas](np.uint64(seed), *d)
    out_u, out_n, out_i, out_perm, kat_out = (a.copy_to_host() for a in d[1:5] + d[6:])
    assert kat_out.tolist() == [list(w) for _, w in KAT]
    s = np.uint64(seed)
    perm = np.empty(N_PERM, dtype=np.int64)
    for r in range(replicas):
        for a, step in enumerate(STEPS):
            for stream in range(4):
                for k in range(N_DRAWS):
                    # bit-identical, on the simulator and on a GPU alike: integer Philox, exact
                    # integer-to-double conversion; the normals go through log, sqrt, cos, sin,
                    # which libdevice rounds within an ulp of the CPU's libm.
                    assert out_u[r, a, stream, k] == R.uniform_at(s, r, stream, step, k)
                    assert out_i[r, a, stream, k] == R.index_at(s, r, stream, step, k, N_INDEX)
                    assert out_n[r, a, stream, k] == pytest.approx(R.normal_at(s, r, stream, step, k),
                                                                   rel=RTOL, abs=RTOL)
            R.fill_permutation(s, r, R.STREAM_PERMUTATION, step, perm)
            assert out_perm[r, a].tolist() == perm.tolist()
            assert sorted(perm.tolist()) == list(range(N_PERM))
    assert len(np.unique(out_u)) == out_u.size  # the draws differ across replica, step, stream, k


# -- trajectories --------------------------------------------------------------------------------

TRAINERS = {
    "gd": dict(training=dict(method="gd", batch_size=None)),
    "sgd_fused_relu": dict(training=dict(method="sgd", batch_size=1), model=dict(activation="relu")),
    "sgd_epochs_softplus": dict(training=dict(method="sgd", batch_size=3, sampling="without_replacement"),
                                model=dict(activation="softplus")),
    "sgd_decay_sigmoid_ntk": dict(training=dict(method="sgd", batch_size=2, weight_decay=0.1),
                                  model=dict(activation="sigmoid", scaling="ntk", hidden_bias=False)),
    "langevin_erf": dict(training=dict(method="langevin", batch_size=None, temperature=0.01),
                         model=dict(activation="erf")),
    "langevin_batch_linear": dict(training=dict(method="langevin", batch_size=2, temperature=0.01),
                                  model=dict(activation="linear", output_bias=False)),
    "sgd_cross_entropy": dict(training=dict(method="sgd", batch_size=1, loss="cross_entropy"),
                              task=dict(kind="random_labels")),
    "sde_sgd_noise": dict(training=dict(method="sde", noise="sgd", batch_size=2, weight_decay=0.05)),
    "sde_heun_langevin": dict(training=dict(method="sde", noise="langevin", scheme="heun", temperature=0.01,
                                            batch_size=None)),
    "sde_rk4_gradient_flow": dict(training=dict(method="sde", noise="none", scheme="rk4", batch_size=None,
                                                   dt=0.02)),
    "sde_loss_scaled": dict(training=dict(method="sde", noise="loss_scaled", temperature=0.1, batch_size=None)),
}


@pytest.mark.parametrize("name", list(TRAINERS))
def test_trajectories_match_cpu(name):
    cfg = tiny(**TRAINERS[name])
    cpu, gpu = pair(cfg)
    theta0 = cpu.initial_params()
    expected, got = theta0.copy(), theta0.copy()
    steps = cfg.run.steps
    status_cpu, failed_cpu = advance(cpu, expected, [0, steps])
    # CUDA in uneven chunks: a step depends only on theta and the step number (an epoch's shuffle
    # is recomputed from the epoch number), so chunking must not change anything
    status_gpu, failed_gpu = advance(gpu, got, [0, 11, 12, steps])
    assert not np.allclose(expected, theta0)  # the replicas did move
    assert_close(got, expected, f"{name}: parameters after {steps} steps")
    assert status_gpu.tolist() == status_cpu.tolist() == [0] * cfg.run.replicas
    assert failed_gpu.tolist() == failed_cpu.tolist()


def test_device_resident_parameters_give_the_same_run():
    """Parameters uploaded once and advanced and measured in place equal the host round trips."""
    cfg = tiny(**TRAINERS["sgd_epochs_softplus"])
    cpu, gpu = pair(cfg)
    theta0 = cpu.initial_params()
    expected = theta0.copy()
    advance(cpu, expected, [0, 17, cfg.run.steps])
    on_device = gpu.backend.upload(theta0)
    advance(gpu, on_device, [0, 5, 17, cfg.run.steps])
    buffers_cpu = allocate(DEFAULT_OBSERVABLES, cfg.run.replicas, 5, 3)
    buffers_gpu = allocate(DEFAULT_OBSERVABLES, cfg.run.replicas, 5, 3)
    cpu.measure(expected, buffers_cpu)
    gpu.measure(on_device, buffers_gpu)
    assert_close(gpu.backend.download(on_device), expected, "downloaded parameters")
    for name in buffers_cpu:
        assert_close(buffers_gpu[name], buffers_cpu[name], name)


# -- observables ---------------------------------------------------------------------------------

MEASURE_CASES = {
    "all_squared": dict(),
    "cross_entropy": dict(training=dict(loss="cross_entropy"), task=dict(kind="random_labels")),
    "labels_01_no_test_set": dict(task=dict(kind="encoding", labels="01", n_test=0)),
    "cheap_only": dict(record=dict(observables=["loss_train", "param_norm"])),
}


@pytest.mark.parametrize("name", list(MEASURE_CASES))
def test_observables_match_cpu(name):
    cfg = tiny(**MEASURE_CASES[name])
    cpu, gpu = pair(cfg)
    # one thread per block and one replica per batch: the batch offsets are exercised too
    gpu.backend.threads_per_block = 1
    gpu.backend.measure_workspace_bytes = 1
    params = cpu.initial_params()
    advance(cpu, params, [0, 20])
    names = cpu.config.observables
    n_probe, n_src = cpu.data.x_probe.shape[0], cpu.data.x_source.shape[0]
    expected = allocate(names, cfg.run.replicas, n_probe, n_src)
    got = allocate(names, cfg.run.replicas, n_probe, n_src)
    cpu.measure(params, expected)
    gpu.measure(params.copy(), got)
    assert set(got) == set(expected)
    for key in expected:
        assert got[key].shape == expected[key].shape
        assert_close(got[key], expected[key], f"{name}: {key}")
    if cfg.task.n_test == 0:
        assert np.all(np.isnan(got["loss_test"]))
    if "ntk" in names:
        assert np.all(np.isfinite(got["ntk"])) and np.any(got["ntk"] != 0.0)


# -- whole runs: HDF5 layout and divergence --------------------------------------------------------

_RUN_SPECIFIC_ATTRS = {"backend", "device", "created", "history", "writer_host", "writer_pid", "writer_started"}


def _tree(path):
    """{name: (kind, shape, dtype, attrs, value)} of every group and dataset of a file."""
    out = {}
    with h5py.File(path, "r") as f:
        def visit(name, obj):
            attrs = {k: v for k, v in obj.attrs.items()
                     if k not in ("DIMENSION_LIST", "REFERENCE_LIST") and not (name == "" and k in _RUN_SPECIFIC_ATTRS)}
            if isinstance(obj, h5py.Dataset):
                out[name] = ("dataset", obj.shape, obj.dtype, obj.chunks, obj.compression, attrs, obj[()])
            else:
                out[name] = ("group", None, None, None, None, attrs, None)
        visit("", f)
        f.visititems(visit)
        root = dict(f.attrs)
    return out, root


def _compare_files(path_gpu, path_cpu, backends=("cuda", "cpu")):
    got, root_gpu = _tree(path_gpu)
    expected, root_cpu = _tree(path_cpu)
    assert sorted(got) == sorted(expected)
    for name, (kind, shape, dtype, chunks, compression, attrs, value) in expected.items():
        g = got[name]
        assert g[:5] == (kind, shape, dtype, chunks, compression), name
        assert sorted(g[5]) == sorted(attrs), name
        for key, v in attrs.items():
            assert np.array_equal(g[5][key], v), f"{name} attribute {key}"
        if kind == "dataset":
            if np.issubdtype(dtype, np.floating):
                assert_close(g[6], value, name)
            else:
                assert np.array_equal(g[6], value), name
    assert (root_gpu["backend"], root_cpu["backend"]) == backends
    assert root_gpu["device"] == CudaBackend().device


def test_run_writes_the_cpu_file(tmp_path):
    cfg = tiny(run=dict(steps=40), record=dict(n_records=8, block_records=3),
               training=dict(method="sgd", batch_size=2))
    cpu, gpu = pair(cfg)
    expected = cpu.run(tmp_path / "cpu.h5", progress=False)
    got = gpu.run(tmp_path / "cuda.h5", progress=False)
    assert got.ok and expected.ok
    assert got.message == expected.message
    _compare_files(tmp_path / "cuda.h5", tmp_path / "cpu.h5")


def test_cpu_only_and_two_time_observables_of_a_cuda_run_equal_the_cpu_file(tmp_path):
    """Features, fragility and two-time quantities of a CUDA run come from a host copy of the
    parameters at each record: the file equals the CPU run's."""
    cfg = tiny(run=dict(steps=40), training=dict(method="sgd", batch_size=2),
               # no time-based checkpoints: a first call's compile time must not change the slots
               record=dict(n_records=6, two_time_waits=2, two_time_lags=3, checkpoint_seconds=1e9,
                           observables=["loss_train", "effective_rank", "participation_ratio", "feature_spectrum",
                                        "input_grad_norm", "flip_distance"]))
    cpu, gpu = pair(cfg)
    assert cpu.run(tmp_path / "cpu.h5", progress=False).ok and gpu.run(tmp_path / "cuda.h5", progress=False).ok
    _compare_files(tmp_path / "cuda.h5", tmp_path / "cpu.h5")


# The simulator runs the measure kernel's body as Python on NumPy scalars, which warn where the
# compiled code silently overflows (a frozen replica's parameters are huge or inf).
@pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")
@pytest.mark.filterwarnings("ignore:invalid value encountered:RuntimeWarning")
@pytest.mark.parametrize("on_divergence", ["stop", "freeze"])
def test_divergence_gives_the_cpu_status(tmp_path, on_divergence):
    # linear network, full-batch GD with eta = 0.8: unstable for some initialisations; with this
    # seed replicas 0 and 3 overflow (at steps 9 and 8 on the CPU) and the other two train on
    cfg = tiny(model=dict(activation="linear"), run=dict(replicas=4, steps=40, on_divergence=on_divergence),
               training=dict(method="gd", batch_size=None, eta=0.8), record=dict(n_records=12, block_records=2))
    cpu, gpu = pair(cfg)
    expected = cpu.run(tmp_path / "cpu.h5", progress=False)
    got = gpu.run(tmp_path / "cuda.h5", progress=False)
    assert expected.code == "diverged"
    assert (got.code, got.message, got.last_step) == (expected.code, expected.message, expected.last_step)
    assert got.failed_replicas.tolist() == expected.failed_replicas.tolist()
    _compare_files(tmp_path / "cuda.h5", tmp_path / "cpu.h5")
    with h5py.File(tmp_path / "cuda.h5", "r") as f:
        failed_steps = f["status/replica_failed_step"][()]
    assert np.any(failed_steps >= 0)
    if on_divergence == "freeze":  # the scenario has frozen and surviving replicas, frozen at different steps
        assert np.any(failed_steps < 0) and len(set(failed_steps[failed_steps >= 0].tolist())) > 1


# -- wiring, errors and the benchmark's refusal ----------------------------------------------------

def test_config_backend_cuda_selects_the_cuda_backend():
    sim = Simulation(replace(tiny(), run=dict(backend="cuda")))
    assert isinstance(sim.backend, CudaBackend)


def test_interrupted_cuda_run_resumes_to_the_uninterrupted_file(tmp_path):
    """backend = 'cuda' from the config, parameters resident on the device, Ctrl-C, resume."""
    cfg = tiny(run=dict(steps=60, backend="cuda"),
               record=dict(n_records=12, block_records=2, checkpoint_seconds=0.0))
    reference = Simulation(cfg).run(tmp_path / "reference.h5", progress=False)
    sim = Simulation(cfg)
    sim.chunk_steps = 7  # many chunks, so that the interrupt lands mid-schedule
    inner, calls = sim.advance, []

    def interrupt_on_fourth_call(*args):
        calls.append(args[1])
        if len(calls) == 4:
            raise KeyboardInterrupt
        return inner(*args)

    sim.advance = interrupt_on_fourth_call
    first = sim.run(tmp_path / "interrupted.h5", progress=False)
    assert first.code == "interrupted" and 0 < first.last_step < cfg.run.steps
    assert resume(tmp_path / "interrupted.h5", progress=False).ok and reference.ok
    _compare_files(tmp_path / "interrupted.h5", tmp_path / "reference.h5", backends=("cuda", "cuda"))


@functools.lru_cache(maxsize=None)
def _gpu_probe():
    """What CudaBackend() does in a fresh Python with the simulator off: 'GPU' or the error message."""
    code = ("from dynsim.engine.cuda import CudaBackend\nfrom dynsim.spec import ConfigError\n"
            "try:\n    CudaBackend()\nexcept ConfigError as exc:\n    print('ERROR', exc)\nelse:\n    print('GPU')")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "NUMBA_ENABLE_CUDASIM": "0"})
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_clear_error_without_gpu_or_simulator():
    probe = _gpu_probe()
    if probe == "GPU":
        pytest.skip("this machine has a usable GPU")
    # CudaUnavailableError is a ConfigError: the CLI prints it without a traceback and exits 2
    assert probe.startswith("ERROR config field 'run.backend': got 'cuda', but ")
    assert "backend = 'cpu'" in probe and "NUMBA_ENABLE_CUDASIM=1" in probe


def test_cli_reports_missing_gpu(tmp_path):
    from conftest import run_cli, write_config

    path = write_config(tmp_path / "c.toml", tiny())
    proc = run_cli("run", path, "-o", tmp_path / "c.h5", "-q", "--backend", "cuda", env=dict(NUMBA_ENABLE_CUDASIM="0"))
    if proc.returncode == 0:
        pytest.skip("this machine has a usable GPU")
    assert proc.returncode == 2
    assert "got 'cuda', but" in proc.stderr and "NUMBA_ENABLE_CUDASIM=1" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_unsupported_method_code_is_refused():
    cfg = tiny()
    cpu, gpu = pair(cfg)
    ti = cpu.trainer_ints.copy()
    ti[0] = 99
    params = cpu.initial_params()
    with pytest.raises(ConfigError, match="gd, sgd, langevin and sde"):
        gpu.backend.advance(params, gpu.data, gpu.model_ints, gpu.model_floats, ti, gpu.trainer_floats, SEED, 0, 1,
                            np.zeros(3, np.int8), np.full(3, -1, np.int64))


@pytest.mark.parametrize("simulator", ["1", "0"])
def test_gpu_benchmark_refuses_without_a_gpu(simulator):
    if simulator == "0" and _gpu_probe() == "GPU":
        pytest.skip("this machine has a GPU: the benchmark would run")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "gpu_w1.py"), "--log2-replicas", "16"],
                          capture_output=True, text=True, timeout=300, cwd=REPO,
                          env={**os.environ, "NUMBA_ENABLE_CUDASIM": simulator})
    assert proc.returncode == 2, proc.stderr
    assert "gpu_w1: refusing to run: " in proc.stderr
    if simulator == "1":
        assert "simulator is active" in proc.stderr
    else:  # no GPU and driver, or (CI's install) no numba-cuda
        assert "no usable NVIDIA GPU" in proc.stderr or "numba-cuda" in proc.stderr
