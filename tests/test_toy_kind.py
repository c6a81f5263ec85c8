"""A kind of experiment is one module: a toy kind defined here, and nowhere else, runs through
``dynsim run``, ``resume``, ``info``, ``config-keys`` and ``analysis report``.

The toy is linear regression y = x . w* trained by full-batch gradient descent on the squared
loss, an ensemble of replicas with their own initial weights. Its loss has a closed form,
L_t = mean_p (x_p . (M^t (w_0 - w*)))^2 with M = I - (2 eta / P) X^T X, which the recorded loss must
match: the shared time loop, the store and the registry handle a kind they have never seen.
"""
import dataclasses
import hashlib

import numpy as np
import pytest

from dynsim import kinds
from dynsim.cli import main as dynsim_main
from dynsim.config import RunSpec, dump_toml
from dynsim.engine import TimeLoop
from dynsim.engine.cpu import STATUS_NONFINITE, CpuBackend
from dynsim.engine.schedule import schedule
from dynsim.experiment import TimeSteppedKind
from dynsim.observables import ObservableSpec
from dynsim.spec import Section, option
from dynsim.store import RunReader
from dynsim.tasks import Dataset

TOY = "toy_linear"


@dataclasses.dataclass(frozen=True)
class ToyModel(Section):
    SECTION = "model"
    kind: str = option(TOY, "str", "network family", choices=(TOY,))
    input_dim: int = option(3, "int", "dimension of the inputs and of w", minimum=1, maximum=64)


@dataclasses.dataclass(frozen=True)
class ToyTask(Section):
    SECTION = "task"
    kind: str = option("linear_teacher", "str", "y = x . w* with w* ~ N(0, I)", choices=("linear_teacher",))
    n_train: int = option(12, "int", "training samples x ~ N(0, I)", minimum=1, maximum=10_000)


@dataclasses.dataclass(frozen=True)
class ToyTraining(Section):
    SECTION = "training"
    eta: float = option(0.05, "float", "learning rate", minimum=0.0, exclusive_minimum=True)

    @property
    def time_step(self) -> float:
        return self.eta


@dataclasses.dataclass(frozen=True)
class ToyRecord(Section):
    SECTION = "record"
    n_records: int = option(12, "int", "record times (log-spaced)", minimum=2, maximum=1000)
    block_records: int = option(4, "int", "records per block write", minimum=1, maximum=1000)
    checkpoint_seconds: float = option(60.0, "float", "seconds between checkpoints", minimum=0.0)
    checkpoint_steps: int = option(None, "int", "steps between checkpoints", minimum=1, optional=True)
    compression: str = option("gzip", "str", "HDF5 filter", choices=("gzip", "none"))


SECTIONS = {"run": RunSpec, "model": ToyModel, "task": ToyTask, "training": ToyTraining, "record": ToyRecord}
OBSERVABLES = {"loss_train": ObservableSpec("loss_train", (), "loss", "mean squared error on the training set")}


@dataclasses.dataclass(frozen=True)
class ToyConfig:
    KIND = TOY
    run: RunSpec = dataclasses.field(default_factory=RunSpec)
    model: ToyModel = dataclasses.field(default_factory=ToyModel)
    task: ToyTask = dataclasses.field(default_factory=ToyTask)
    training: ToyTraining = dataclasses.field(default_factory=ToyTraining)
    record: ToyRecord = dataclasses.field(default_factory=ToyRecord)
    observables = tuple(OBSERVABLES)

    def resolved(self):
        return self

    def to_mapping(self):
        return {name: getattr(self, name).to_mapping() for name in SECTIONS}

    def to_toml(self):
        return dump_toml(self.to_mapping())

    def digest(self):
        return hashlib.sha256(self.to_toml().encode()).hexdigest()

    def model_attributes(self):
        return dict(kind=TOY, input_dim=self.model.input_dim, n_params=self.model.input_dim, param_layout=self.param_layout)

    @property
    def param_layout(self):
        return "w:input_dim"

    def training_attributes(self):
        return dict(method="gd", eta=self.training.eta, loss="squared")

    def observable_specs(self):
        return OBSERVABLES

    def dim_sizes(self, n_probes, n_sources, n_waits=0):
        return {}


def _data(cfg):
    rng = np.random.default_rng([cfg.run.seed, 7])
    x = rng.standard_normal((cfg.task.n_train, cfg.model.input_dim))
    w_star = rng.standard_normal(cfg.model.input_dim)
    d = cfg.model.input_dim
    return Dataset(x, x @ w_star, np.zeros((0, d)), np.zeros(0), np.zeros((0, d)), np.zeros(0, dtype=np.int64)), w_star


class ToyRunner(TimeLoop):
    stop_after = None  # set by a test: interrupt (as Ctrl-C would) once this step is passed

    def __init__(self, config):
        data, self.w_star = _data(config)
        super().__init__(config, backend=CpuBackend(), data=data, chunk_steps=7,
                         record_steps=schedule(config.run.steps, config.record.n_records, "log",
                                               np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))

    def initial_params(self):
        rng = np.random.default_rng([self.config.run.seed, 8])
        return rng.standard_normal((self.config.run.replicas, self.config.model.input_dim))

    def allocate_buffers(self):
        return {"loss_train": np.empty(self.config.run.replicas)}

    def advance(self, params, s0, s1, status, failed_step):
        if self.stop_after is not None and s0 >= self.stop_after:
            raise KeyboardInterrupt
        x, y, eta = self.data.x_train, self.data.y_train, self.config.training.eta
        for step in range(s0, s1):
            params -= eta * (2.0 / len(y)) * ((params @ x.T - y) @ x)
            bad = ~np.isfinite(params).all(axis=1) & (status == 0)
            status[bad], failed_step[bad] = STATUS_NONFINITE, step

    def measure(self, params, buffers):
        buffers["loss_train"][:] = np.mean((params @ self.data.x_train.T - self.data.y_train) ** 2, axis=1)


class ToyKind(TimeSteppedKind):
    name = TOY
    description = "linear regression by gradient descent (a test's toy kind)"
    sections = SECTIONS
    config_class = ToyConfig
    report_sections = ("time_series",)

    def runner(self, config):
        return ToyRunner(config)


@pytest.fixture
def toy_kind():
    kind = kinds.register(ToyKind())
    yield kind
    kinds.unregister(TOY)


def _config_file(tmp_path, steps=300):
    path = tmp_path / "toy.toml"
    path.write_text(dump_toml(dict(run=dict(seed=3, replicas=5, steps=steps), model=dict(kind=TOY, input_dim=3),
                                   training=dict(eta=0.02))))
    return path


def _closed_form_loss(runner, steps):
    x, y = runner.data.x_train, runner.data.y_train
    contraction = np.eye(x.shape[1]) - (2.0 * runner.config.training.eta / len(y)) * x.T @ x
    start = runner.initial_params() - runner.w_star
    out = []
    for t in steps:
        error = start @ np.linalg.matrix_power(contraction, int(t)).T
        out.append(np.mean((error @ x.T) ** 2, axis=1))
    return np.array(out)


def test_toy_kind_runs_through_run_info_and_config_keys(toy_kind, tmp_path, capsys):
    cfg_path = _config_file(tmp_path)
    out = tmp_path / "toy.h5"
    assert dynsim_main(["run", str(cfg_path), "-o", str(out), "-q"]) == 0
    runner = ToyRunner(kinds.load_config(cfg_path))
    with RunReader(out) as rd:
        assert rd.attrs["kind"] == TOY and rd.status["code"] == "completed"
        expected = _closed_form_loss(runner, rd.steps)
        # relative 1e-9: the closed form multiplies matrix powers, the loop steps; both in float64
        np.testing.assert_allclose(rd.observable("loss_train"), expected, rtol=1e-9, atol=1e-14)
        assert expected[-1].max() < 1e-3 * expected[0].min()  # it did learn: the check is not vacuous
    capsys.readouterr()
    assert dynsim_main(["info", str(out)]) == 0
    info = capsys.readouterr().out
    assert "model       toy_linear: input_dim=3" in info and "training    gd eta=0.02" in info
    assert dynsim_main(["config-keys", "--kind", TOY]) == 0
    keys = capsys.readouterr().out
    assert "[task]" in keys and "n_train" in keys and "linear_teacher" in keys


def test_toy_kind_resumes_bit_for_bit(toy_kind, tmp_path, monkeypatch):
    cfg_path = _config_file(tmp_path)
    reference, out = tmp_path / "reference.h5", tmp_path / "toy.h5"
    assert dynsim_main(["run", str(cfg_path), "-o", str(reference), "-q"]) == 0
    monkeypatch.setattr(ToyRunner, "stop_after", 100)
    assert dynsim_main(["run", str(cfg_path), "-o", str(out), "-q"]) == 130  # interrupted
    with RunReader(out) as rd:
        assert rd.status["code"] == "interrupted" and 0 < rd.n_records < 12
    monkeypatch.setattr(ToyRunner, "stop_after", None)
    assert dynsim_main(["resume", str(out), "-q"]) == 0
    with RunReader(out) as a, RunReader(reference) as b:
        assert a.status["code"] == "completed"
        assert np.array_equal(a.dataset("params/final"), b.dataset("params/final"))
        assert np.array_equal(a.observable("loss_train"), b.observable("loss_train"))


def test_toy_kind_goes_through_analysis_report(toy_kind, tmp_path):
    from analysis.report import write_report

    cfg_path = _config_file(tmp_path)
    out = tmp_path / "toy.h5"
    assert dynsim_main(["run", str(cfg_path), "-o", str(out), "-q"]) == 0
    report = write_report([str(out)], tmp_path / "report").read_text()
    with RunReader(out) as rd:
        final = rd.observable("loss_train")[-1]
    assert "loss_train" in report
    assert f"{final.mean():.4g}" in report  # the final mean over replicas, as the file has it


def test_unknown_kind_lists_every_registered_kind(toy_kind, tmp_path, capsys):
    path = tmp_path / "cnn.toml"
    path.write_text('[model]\nkind = "cnn"\n')
    assert dynsim_main(["run", str(path), "-q"]) == 2
    err = capsys.readouterr().err
    assert "model.kind" in err and all(repr(k) in err for k in ("simple", "mlp", "maxnorm_chain", TOY))
