"""The response-law model as a kind of experiment (``[model] kind = "response_law"``).

The theory's own dynamics (``dynsim.models.response_law``): the output function on the grid of
training inputs, test inputs and probes, advanced by the aging amplitude times a kernel, with the
batches of the same trainers (gd; sgd with the network's Philox draws for the same seed). Its
tables are those of the simple network (``[run]``, ``[task]``, ``[training]``, ``[record]``), and a
``[model]`` that holds the law's kernel and amplitude next to the simple network's keys (the network
whose initial function and NTK it uses). A file is a run file: ``/params`` hold the function
f [replica, grid * M] (layout ``f:grid,outputs``), the observables keep the simple network's names
(``output``, ``response``, ``loss_train``, ...), so that the report's sections read it unchanged.

The dynamics run on the CPU backend in float64. Left out: Langevin noise in function space (it
needs the kernel's square root on the grid and gives no sample path to compare with the network's).
"""
import dataclasses

import numpy as np

from .config import TEST_SET_OBSERVABLES, Config, RecordSchedule, RunSpec, TablesConfig, config_from_tables, parse_toml
from .config import SECTIONS as SIMPLE_SECTIONS
from .engine import TimeLoop
from .engine.cpu import CpuBackend
from .engine.schedule import schedule
from .experiment import TimeSteppedKind
from .integrators import SAMPLING, TrainerSpec
from .losses import LOSSES
from .models.multi import output_jacobians
from .models.response_law import (LAW, LI_BATCH, LI_LOSS, LI_OUTPUTS, LI_SAMPLING, LI_TRAIN, ResponseLawModel,
                                  advance_law, amplitude_of, measure_law, network_function, network_ntk,
                                  parametric_kernel)
from .observables import OBSERVABLES as SIMPLE_OBSERVABLES
from .observables import ObservableSpec
from .parallel import over_replicas
from .spec import ConfigError, option
from .store import RunReader, StoreError, file_kind
from .tasks import TaskSpec, make_dataset

_CHUNK_WORK = 2e8  # replica x grid x batch x M^2 products per advance call: ~0.2 s
_KERNEL_BYTES_LIMIT = 4 << 30

OBSERVABLES = {spec.name: spec for spec in (
    SIMPLE_OBSERVABLES["loss_train"], SIMPLE_OBSERVABLES["loss_test"], SIMPLE_OBSERVABLES["accuracy_train"],
    SIMPLE_OBSERVABLES["accuracy_test"],
    ObservableSpec("output", ("probe", "output_index"), "output", "the law's function f_m(x_p) at each probe"),
    ObservableSpec("response", ("source", "probe"), "output",
                   "the law's one-step response R_t(x_p; x_s) = -eta A(t) K(x_p, x_s) l'(f_t(x_s), y_s)"),
    ObservableSpec("response_outputs", ("source", "probe", "output_index"), "output",
                   "the same for M outputs: -eta A(t) sum_n K_mn(x_p, x_s) l'(f_n(x_s), y_sn)"),
    ObservableSpec("ntk", ("probe", "probe2"), "output^2 / parameter^2",
                   "the law's kernel times its amplitude A(t) K(x_p, x_q) on the probes (one output)"),
    ObservableSpec("amplitude", (), "1", "the amplitude A(t) of the law at the record"),
    ObservableSpec("late_response", ("test",), "output",
                   "plasticity: the first-order response of one step on each never-trained test sample x_k at "
                   "itself, eta A(t) |sum_n K_mn(x_k, x_k) l'_n(f_t(x_k), y_k)| (norm over outputs m)"),
)}
DEFAULT_OBSERVABLES = ("loss_train", "loss_test", "accuracy_train", "accuracy_test", "output", "response",
                       "amplitude", "late_response")


@dataclasses.dataclass(frozen=True)
class LawTraining(TrainerSpec):
    """[training] of the law: the simple network's keys; the trainers whose batches the law takes."""
    method: str = option("gd", "str", "whose batches: gd (all samples) or sgd (the network's Philox draws)",
                         choices=("gd", "sgd"))
    loss: str = option("squared", "str", "per-sample loss l whose derivative drives the law", choices=tuple(LOSSES))

    def check(self):
        super().check()
        if self.weight_decay != 0.0:
            self.fail("weight_decay", f"got {self.weight_decay}; the law acts on the function, which has no weight "
                                      "decay: remove it")


@dataclasses.dataclass(frozen=True)
class LawRecord(RecordSchedule):
    observables: tuple = option(None, "str_list", "observables to record (default: all that apply)",
                                choices=tuple(OBSERVABLES), optional=True)


SECTIONS = {"run": RunSpec, "model": ResponseLawModel, "task": TaskSpec, "training": LawTraining,
            "record": LawRecord}


@dataclasses.dataclass(frozen=True)
class ResponseLawConfig(TablesConfig):
    run: RunSpec = dataclasses.field(default_factory=RunSpec)
    model: ResponseLawModel = dataclasses.field(default_factory=ResponseLawModel)
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    training: LawTraining = dataclasses.field(default_factory=LawTraining)
    record: LawRecord = dataclasses.field(default_factory=LawRecord)

    KIND = LAW
    TABLES = SECTIONS

    def __post_init__(self):
        self._check_tables()
        self.run.require_cpu_float64("the response-law model")
        t, task, m = self.training, self.task, self.model
        if t.batch_size is not None and t.batch_size > task.n_train:
            raise ConfigError("training.batch_size", f"got {t.batch_size}; must be <= task.n_train ({task.n_train})")
        if t.loss in ("cross_entropy", "sigmoid_squared") and not (task.is_classification and task.labels == "pm1"):
            raise ConfigError("training.loss", f"got {t.loss!r}; it needs +1/-1 labels: use a classification task "
                                               "with task.labels = 'pm1', or loss 'squared'")
        if m.outputs > 1 and task.kind != "encoding":
            raise ConfigError("model.outputs", f"got {m.outputs} with task.kind = {task.kind!r}; M outputs need the "
                                               "M-region encoding task: set task.kind = 'encoding'")
        for name in self.record.observables or ():
            if name in TEST_SET_OBSERVABLES and task.n_test == 0:
                raise ConfigError("record.observables", f"got {name!r} with task.n_test = 0: there is no test set; "
                                                        "set task.n_test > 0 or remove it")
            if SIMPLE_OBSERVABLES.get(name) is not None and SIMPLE_OBSERVABLES[name].classification_only \
                    and not task.is_classification:
                raise ConfigError("record.observables", f"got {name!r}; it needs a classification task")
            if name in ("response", "ntk") and m.outputs > 1:
                raise ConfigError("record.observables", f"got {name!r} with model.outputs = {m.outputs}; use "
                                                        "'response_outputs'" if name == "response" else
                                  f"got 'ntk' with model.outputs = {m.outputs}; the kernel is recorded for one "
                                  "output only")
            if name == "late_response" and task.n_test == 0:
                raise ConfigError("record.observables", "got 'late_response' with task.n_test = 0: it is measured on "
                                                        "the test samples; set task.n_test > 0 or remove it")
            if name == "response_outputs" and m.outputs == 1:
                raise ConfigError("record.observables", "got 'response_outputs' with one output: use 'response'")

    @property
    def observables(self) -> tuple[str, ...]:
        if self.record.observables is not None:
            return tuple(self.record.observables)
        names = []
        for name in DEFAULT_OBSERVABLES:
            if (name in TEST_SET_OBSERVABLES or name == "late_response") and self.task.n_test == 0:
                continue
            if name.startswith("accuracy") and not self.task.is_classification:
                continue
            names.append("response_outputs" if name == "response" and self.model.outputs > 1 else name)
        return tuple(names)

    def resolved(self) -> "ResponseLawConfig":
        task = dataclasses.replace(self.task, seed=self.run.seed if self.task.seed is None else self.task.seed,
                                   teacher_activation=self.task.teacher_activation or self.model.activation)
        record = dataclasses.replace(self.record, observables=self.observables)
        return dataclasses.replace(self, task=task, training=self.training.resolved(self.task.n_train), record=record)

    # -- what the store asks of a config ------------------------------------------------------------
    def model_attributes(self) -> dict:
        grid = self.task.n_train + self.task.n_test + self.task.n_probes
        return self.model.attributes() | dict(n_params=grid * self.model.outputs, param_layout=self.param_layout,
                                              grid="training inputs, test inputs, probes")

    @property
    def param_layout(self) -> str:
        return "f:grid,outputs"

    def training_attributes(self) -> dict:
        return self.training.attributes(self.task.n_train)

    def observable_specs(self) -> dict:
        return OBSERVABLES

    def dim_sizes(self, n_probes: int, n_sources: int, n_waits: int = 0) -> dict[str, int]:
        return {"probe": n_probes, "probe2": n_probes, "source": n_sources, "output_index": self.model.outputs,
                "test": self.task.n_test}


# -- the reference run file ---------------------------------------------------------------------------------
def _reference(config: ResponseLawConfig, data):
    """An open reader of ``model.reference_file``, checked to be a simple-network run on the same data,
    and its config; ``ConfigError`` on ``model.reference_file`` naming what differs otherwise."""
    path = config.model.reference_file
    field = "model.reference_file"
    try:
        kind = file_kind(path)
    except (OSError, StoreError) as exc:
        raise ConfigError(field, f"cannot read {path!r}: {exc}") from None
    if kind != "simple":
        raise ConfigError(field, f"{path!r} is a {kind} file; the law reads a simple-network run file")
    reader = RunReader(path)
    try:
        network_config = config_from_tables(parse_toml(reader.config_text, f"{path}:/config"), SIMPLE_SECTIONS,
                                            Config, "simple")
        stored = reader.data()
        for name in ("x_train", "y_train", "x_probe"):
            a, b = getattr(stored, name), getattr(data, name)
            if a.shape != b.shape or not np.array_equal(a, b):
                raise ConfigError(field, f"{path!r} was trained on other data ({name} differs): give the law the "
                                         "run's [task] table and run.seed")
        if reader.attrs.get("n_replicas", 0) < config.run.replicas:
            raise ConfigError(field, f"{path!r} has {reader.attrs.get('n_replicas')} replicas and the law "
                                     f"{config.run.replicas}: set run.replicas <= the file's")
    except BaseException:
        reader.close()
        raise
    return reader, network_config


def _file_amplitude(reader, replicas: int):
    """(times, ratio [replica, record]): the file's NTK amplitude (mean diagonal on the probes) over t = 0."""
    names = reader.observable_names
    name = "ntk" if "ntk" in names else "ntk_outputs" if "ntk_outputs" in names else None
    if name is None:
        raise ConfigError("model.amplitude", f"'file' reads the recorded NTK of {reader.path}, which records none: "
                                             "record 'ntk' (or 'ntk_outputs') in that run")
    ntk = reader.observable(name)[:, :replicas]
    diagonal = np.einsum("trpp->trp", ntk) if name == "ntk" else np.einsum("trppmm->trpm", ntk).reshape(
        ntk.shape[0], replicas, -1)
    level = diagonal.mean(axis=2)  # [record, replica]
    if reader.steps[0] != 0 or not np.all(np.isfinite(level)) or np.any(level <= 0):
        raise ConfigError("model.amplitude", f"{reader.path}: its NTK amplitude must be recorded from step 0 and "
                                             "stay finite and positive (a diverged or empty record)")
    return reader.times, (level / level[0]).T


def _file_kernel_params(reader, network_config, config):
    """(theta at t = 0, theta at the kernel step) [replica, n_params] from the file's trajectory."""
    replicas = config.run.replicas
    if reader.trajectory_replicas < replicas:
        raise ConfigError("model.kernel", f"'ntk_file' needs the parameters of {replicas} replicas of "
                                          f"{reader.path} (it records {reader.trajectory_replicas}): run it with "
                                          f"[record] params = {replicas} or more")
    steps = reader.steps
    want = steps[-1] if config.model.kernel_step is None else config.model.kernel_step
    record = int(np.argmin(np.abs(steps - want)))
    theta = reader.trajectory(slice(None))
    return theta[0, :replicas], theta[record, :replicas], int(steps[record])


class ResponseLawRun(TimeLoop):
    """The law on one config: builds the grid, the kernel and the amplitude, then the shared time loop."""

    def __init__(self, config):
        cfg = config.resolved()
        model = cfg.model
        data = make_dataset(cfg.task, model.input_dim, model.activation, cfg.run.seed, outputs=model.outputs)
        self.grid = np.concatenate([data.x_train, data.x_test, data.x_probe])
        self.probe0 = data.x_train.shape[0] + data.x_test.shape[0]
        n_grid, n_train, n_out = self.grid.shape[0], data.x_train.shape[0], model.outputs
        rows = cfg.run.replicas if model.per_replica_kernel else 1
        need = rows * n_grid * n_train * n_out * n_out * 8
        if need > _KERNEL_BYTES_LIMIT:
            raise ConfigError("run.replicas", f"the law's kernel would take {need / 2**30:.1f} GiB ({rows} x {n_grid} "
                                              f"grid x {n_train} training inputs x {n_out}^2 outputs): use fewer "
                                              "replicas, probes, test or training samples")
        batch = cfg.training.effective_batch(n_train)
        work = cfg.run.replicas * n_grid * batch * n_out * n_out
        super().__init__(cfg, backend=CpuBackend(), data=data, chunk_steps=max(1, int(_CHUNK_WORK // max(work, 1))),
                         record_steps=schedule(cfg.run.steps, cfg.record.n_records, cfg.record.spacing,
                                               np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64)))
        sampling = SAMPLING["full"] if cfg.training.method == "gd" else SAMPLING[cfg.training.sampling]
        self.law_ints = np.zeros(5, dtype=np.int64)
        self.law_ints[[LI_OUTPUTS, LI_BATCH, LI_SAMPLING, LI_LOSS, LI_TRAIN]] = (n_out, batch, sampling,
                                                                               LOSSES[cfg.training.loss], n_train)
        self.y_train = np.ascontiguousarray(data.y_train, dtype=np.float64).reshape(-1)
        self.y_test = np.ascontiguousarray(data.y_test, dtype=np.float64).reshape(-1)
        self.class_threshold = 0.5 if cfg.task.labels == "01" else 0.0
        self.file_times = self.file_amplitude = None
        self.kernel_note = ""
        self._build_kernels(cfg, data)

    def _build_kernels(self, cfg, data):
        model, network = cfg.model, cfg.model.network
        n_out, want_ntk = model.outputs, "ntk" in cfg.observables
        x_train, x_test, x_probe = data.x_train, data.x_test, data.x_probe
        reader = network_config = None
        if model.reference_file:
            reader, network_config = _reference(cfg, data)
        try:
            if model.amplitude == "file":
                self.file_times, self.file_amplitude = _file_amplitude(reader, cfg.run.replicas)
            if model.per_replica_kernel:
                if model.kernel == "ntk_file":
                    network = network_config.model
                    theta0, thetas, step = _file_kernel_params(reader, network_config, cfg)
                    self.kernel_note = f"ntk_file at step {step}"
                else:
                    thetas = network.init_params(cfg.run.seed, cfg.run.replicas)
                self.kernel = np.empty((len(thetas), self.grid.shape[0], x_train.shape[0], n_out, n_out))
                self.kernel_probes = np.empty((len(thetas) if want_ntk else 0, x_probe.shape[0], x_probe.shape[0]))
                self.kernel_test = np.empty((len(thetas), x_test.shape[0], n_out, n_out))
                for r, theta in enumerate(thetas):
                    self.kernel[r] = network_ntk(network, theta, self.grid, x_train)
                    scale = 1.0
                    if model.kernel == "ntk_file":  # its shape at the kernel step, at the initial size
                        start = network_ntk(network, theta0[r], x_train, x_train)
                        scale = np.einsum("ssmm->", start) / np.einsum("ssmm->", self.kernel[r, :x_train.shape[0]])
                        self.kernel[r] *= scale
                    if want_ntk:
                        self.kernel_probes[r] = scale * network_ntk(network, theta, x_probe, x_probe)[:, :, 0, 0]
                    jac = output_jacobians(network, theta, x_test)  # K(x_k, x_k): the diagonal only
                    self.kernel_test[r] = scale * np.einsum("kmp,knp->kmn", jac, jac)
            else:
                base = self._shared_kernel(model, network, self.grid, x_train)
                self.kernel = np.zeros((1, self.grid.shape[0], x_train.shape[0], n_out, n_out))
                for m in range(n_out):
                    self.kernel[0, :, :, m, m] = base
                self.kernel_probes = self._shared_kernel(model, network, x_probe, x_probe)[None] if want_ntk \
                    else np.empty((0, x_probe.shape[0], x_probe.shape[0]))
                diagonal = np.diagonal(self._shared_kernel(model, network, x_test, x_test)).copy()
                self.kernel_test = np.zeros((1, x_test.shape[0], n_out, n_out))
                for m in range(n_out):
                    self.kernel_test[0, :, m, m] = diagonal
        finally:
            if reader is not None:
                reader.close()

    @staticmethod
    def _shared_kernel(model, network, x1, x2):
        if model.kernel == "ntk_infinite":
            from .theory.kernels import init_kernels  # SymPy-derived: imported only for this kernel

            return init_kernels(network, x1, x2).ntk
        return parametric_kernel(model.kernel, x1, x2, model.kernel_scale, model.length_scale)

    # -- the four methods of the time loop -------------------------------------------------------------------
    def initial_params(self) -> np.ndarray:
        cfg = self.config
        f = np.zeros((cfg.run.replicas, self.grid.shape[0] * cfg.model.outputs))
        if cfg.model.initial == "network":
            network = cfg.model.network
            for r, theta in enumerate(network.init_params(cfg.run.seed, cfg.run.replicas)):
                f[r] = network_function(network, theta, self.grid).reshape(-1)
        return f

    def allocate_buffers(self) -> dict:
        cfg, data = self.config, self.data
        names, replicas, n_out = set(cfg.observables), cfg.run.replicas, cfg.model.outputs
        n_probe, n_source = data.x_probe.shape[0], data.source_index.shape[0]
        response = "response" in names or "response_outputs" in names
        buffers = {
            "loss_train": np.full(replicas, np.nan), "loss_test": np.full(replicas, np.nan),
            "accuracy_train": np.full(replicas, np.nan), "accuracy_test": np.full(replicas, np.nan),
            "output": np.full((replicas, n_probe if "output" in names else 0, n_out), np.nan),
            "response_outputs": np.full((replicas, n_source if response else 0, n_probe, n_out), np.nan),
            "ntk": np.full((replicas, n_probe if "ntk" in names else 0, n_probe), np.nan),
            "amplitude": np.full(replicas, np.nan),
            "late_response": np.full((replicas, data.x_test.shape[0] if "late_response" in names else 0), np.nan),
        }
        if "response" in names:  # one output: a view of the M-output response without its output axis
            buffers["response"] = buffers["response_outputs"][..., 0]
        return buffers

    def amplitude(self, steps) -> np.ndarray:
        """A(t) [1 or replica, len(steps)] at the given steps (t = step * eta)."""
        times = np.asarray(steps, dtype=np.float64) * self.config.training.time_step
        return np.ascontiguousarray(amplitude_of(self.config.model, times, self.file_times, self.file_amplitude))

    def advance(self, params, s0, s1, status, failed_step):
        self._step = s1  # the loop measures where its last advance ended (the amplitude of that step)
        amp = self.amplitude(np.arange(s0, s1))
        over_replicas(advance_law, params.shape[0], params, self.kernel, self.y_train, amp, self.law_ints,
                      float(self.config.training.eta), np.uint64(self.config.run.seed), s0, s1, status, failed_step)

    def measure(self, params, buffers):
        amp = np.ascontiguousarray(self.amplitude([getattr(self, "_step", 0)])[:, 0])
        replicas = params.shape[0]
        if amp.shape[0] > replicas:
            amp = amp[:replicas]
        over_replicas(measure_law, replicas, params, self.kernel, self.kernel_test, self.y_train, self.y_test,
                      self.data.x_test.shape[0], self.probe0, self.data.source_index, amp, self.law_ints,
                      float(self.config.training.eta), self.class_threshold, buffers["loss_train"], buffers["loss_test"],
                      buffers["accuracy_train"], buffers["accuracy_test"], buffers["output"], buffers["response_outputs"],
                      buffers["late_response"])
        buffers["amplitude"][:] = np.broadcast_to(amp, (replicas,))
        if buffers["ntk"].shape[1]:
            kp = self.kernel_probes[:replicas] if self.kernel_probes.shape[0] > 1 else self.kernel_probes
            buffers["ntk"][:] = amp[:, None, None] * kp if amp.shape[0] > 1 else amp[0] * kp


class ResponseLawKind(TimeSteppedKind):
    name = LAW
    description = ("the response-law model: f_{t+1}(x) = f_t(x) - eta A(t) sum_s K(x, x_s) l'(f_t(x_s), y_s) / B, "
                   "the theory's dynamics of the simple network's function")
    sections = SECTIONS
    config_class = ResponseLawConfig
    report_sections = ("training", "response", "kernel", "regions", "law_vs_network", "time_series")
    sweep_report_sections = ("sweep_table",)
    compile_seconds = 4  # two small kernels (benchmarks/compile.py measures the simple net's)

    def runner(self, config) -> ResponseLawRun:
        return ResponseLawRun(config)

    def compile_plan(self) -> list[dict]:
        """Tiny configs calling every kernel of the law (one and M outputs, gd and sgd)."""
        base = dict(run=dict(seed=1, replicas=2, steps=4), model=dict(kind=LAW, width=4, kernel="gaussian"),
                    task=dict(kind="encoding", n_train=4, n_test=2, n_probes=3, n_sources=2),
                    record=dict(n_records=2))
        plan = [base, {**base, "training": dict(method="sgd", batch_size=2)}]
        plan.append({**base, "model": dict(kind=LAW, width=4, kernel="ntk_init", outputs=2)})
        return plan


KIND = ResponseLawKind()
