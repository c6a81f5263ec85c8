"""Deep classifiers as a run: ``[model] kind = "mlp"`` configs, trained and recorded like any run.

A config whose ``[model]`` table has ``kind = "mlp"`` is a ``DeepConfig``: the same ``[run]`` and
``[training]`` tables as a simple-network run (every trainer: gd, sgd, langevin, sde), a deep MLP
(``dynsim.models.deep``), a K-class task (``dynsim.tasks.classification``) and a ``[record]``
table whose observables are those of ``dynsim.observables.deep`` (neuron modes, basins, feature
ranks, fooling). ``dynsim run``, ``resume``, ``info`` and ``sweep`` take it unchanged: the time
loop, the record schedule, checkpoints, divergence handling and the HDF5 file are the engine's
and the store's (``DeepSimulation`` only swaps the kernels). In the file, ``/inputs/noise_x`` holds
the random-noise inputs (observable axis ``probe``) and ``/inputs/basin_index`` the training samples
whose sample-space basin is recorded (axis ``source``); ``/probes`` and ``/sources`` are empty (files
written before 2026-12-04 kept them there); ``/data/y_*`` hold class indices.

The deep network runs on the CPU backend in float64 (``run.backend`` / ``run.precision`` say so
when set otherwise).
"""
import dataclasses

import numpy as np

from .config import TEST_SET_OBSERVABLES, RecordSchedule, RunSpec, TablesConfig, config_from_tables
from .engine import TimeLoop
from .engine.cpu import CpuBackend, advance_deep
from .experiment import TimeSteppedKind
from .engine.schedule import schedule
from .integrators import TrainerSpec
from .models.deep import DeepMLP
from .observables.deep import DEEP_DEFAULT_OBSERVABLES, DEEP_OBSERVABLES, DeepProbes, allocate_deep, deep_dim_sizes
from .observables.deep import measure_deep
from .spec import ConfigError, option
from .tasks import Dataset
from .tasks.classification import ClassificationTask, make_classification_data

_CHUNK_WORK = 2e8  # replica x sample x parameter products per advance call: ~0.2-1 s


@dataclasses.dataclass(frozen=True)
class DeepRecord(RecordSchedule):
    observables: tuple = option(None, "str_list", "observables to record (default: all)",
                                choices=tuple(DEEP_OBSERVABLES), optional=True)
    basin_samples: int = option(16, "int", "training samples (evenly spread) whose sample-space basin is recorded",
                                minimum=1, maximum=4096)
    basin_directions: int = option(16, "int", "random unit directions of the sample-space basin", minimum=1,
                                   maximum=100_000)
    basin_max_radius: float = option(8.0, "float", "largest input radius the sample-space basin searches",
                                     minimum=0.0, exclusive_minimum=True)
    basin_bisections: int = option(12, "int", "bisection halvings of both basins (resolution max / 2^n)",
                                   minimum=1, maximum=60)
    weight_basin_directions: int = option(4, "int", "random directions of the weight-space basin", minimum=1,
                                          maximum=10_000)
    weight_basin_max: float = option(2.0, "float", "largest relative weight perturbation searched", minimum=0.0,
                                     exclusive_minimum=True)
    weight_basin_fraction: float = option(0.9, "float", "weight-space basin: training accuracy must stay >= this "
                                                        "fraction of its unperturbed value", minimum=0.0, maximum=1.0)
    weight_basin_samples: int = option(256, "int", "training samples (the first ones) the weight-space basin's "
                                                   "accuracy is computed on", minimum=1, maximum=10_000_000)
    noise_inputs: int = option(128, "int", "random-noise inputs (feature rank, fooling); also the number of "
                                           "training inputs of the data feature rank", minimum=2, maximum=100_000)
    fooling_confidence: float = option(0.9, "float", "fooling: softmax confidence that counts as a confident "
                                                     "classification of noise", minimum=0.0, maximum=1.0)


@dataclasses.dataclass(frozen=True)
class DeepTraining(TrainerSpec):
    """[training] of the deep MLP: every trainer's keys; its discrete step (``integrators.deep``) clips."""
    CLIPS = True


_SECTIONS = {"run": RunSpec, "model": DeepMLP, "task": ClassificationTask, "training": DeepTraining,
             "record": DeepRecord}


@dataclasses.dataclass(frozen=True)
class DeepConfig(TablesConfig):
    run: RunSpec = dataclasses.field(default_factory=RunSpec)
    model: DeepMLP = dataclasses.field(default_factory=DeepMLP)
    task: ClassificationTask = dataclasses.field(default_factory=ClassificationTask)
    training: DeepTraining = dataclasses.field(default_factory=lambda: DeepTraining(loss="softmax_cross_entropy"))
    record: DeepRecord = dataclasses.field(default_factory=DeepRecord)

    KIND = "mlp"
    TABLES = _SECTIONS
    # The input dimension lives in [model] for every kind; configs and files written before
    # 2026-12-07 gave the MLP's in [task].
    MOVED_KEYS = {("task", "input_dim"): ("model", "input_dim")}

    def __post_init__(self):
        self._check_tables()
        self.run.require_cpu_float64("the deep MLP (model.kind = 'mlp')")
        t = self.training
        if t.loss != "softmax_cross_entropy":
            raise ConfigError("training.loss", f"got {t.loss!r}; a deep classifier (model.kind = 'mlp') is trained "
                                               "on the softmax cross-entropy: set training.loss = "
                                               "'softmax_cross_entropy' or remove it")
        if t.batch_size is not None and t.batch_size > self.task.train_size:
            raise ConfigError("training.batch_size", f"got {t.batch_size}; must be <= the training set size "
                                                     f"({self.task.train_size})")
        if self.record.basin_samples > self.task.train_size:
            raise ConfigError("record.basin_samples", f"got {self.record.basin_samples}; must be <= the training set "
                                                      f"size ({self.task.train_size})")
        for name in self.record.observables or ():
            if name in TEST_SET_OBSERVABLES and self.task.test_size == 0:
                raise ConfigError("record.observables", f"got {name!r} with no test samples (task.n_test = 0): "
                                                        "set task.n_test > 0 or remove it")
        self.task.check_dimension(self.input_dim)
        self.architecture  # noqa: B018 - validates input_dim / classes

    @property
    def input_dim(self) -> int:
        """D: ``model.input_dim``, or the task's own where that is unset."""
        return self.task.input_dimension(self.model.input_dim)

    @property
    def architecture(self):
        return self.model.architecture(self.input_dim, self.task.n_classes)

    @property
    def observables(self) -> tuple[str, ...]:
        if self.record.observables is not None:
            return tuple(self.record.observables)
        return tuple(n for n in DEEP_DEFAULT_OBSERVABLES if self.task.test_size > 0 or n not in TEST_SET_OBSERVABLES)

    # -- the config protocol the engine and the store use ---------------------------------------
    def resolved(self) -> "DeepConfig":
        task = dataclasses.replace(self.task, seed=self.run.seed if self.task.seed is None else self.task.seed)
        training = self.training.resolved(task.train_size)
        record = dataclasses.replace(self.record, observables=self.observables)
        return dataclasses.replace(self, task=task, training=training, record=record)

    def model_attributes(self) -> dict:
        return self.architecture.attributes()

    @property
    def param_layout(self) -> str:
        return self.architecture.param_layout

    def training_attributes(self) -> dict:
        return self.training.attributes(self.task.train_size)

    def observable_specs(self) -> dict:
        return DEEP_OBSERVABLES

    def dim_sizes(self, n_probes: int, n_sources: int, n_waits: int = 0) -> dict[str, int]:
        """The deep observables' axes from the config itself (a deep run has no probes or sources of the
        simple network's kind; its noise inputs and basin samples are named inputs)."""
        return deep_dim_sizes(self.model.depth, len(basin_sample_index(self.task.train_size, self.record.basin_samples)),
                              min(self.record.noise_inputs, self.task.train_size))


def deep_config_from_mapping(data: dict) -> DeepConfig:
    tables = dict(data) if isinstance(data, dict) else data
    if isinstance(tables, dict) and isinstance(tables.get("training", {}), dict):
        tables["training"] = {"loss": "softmax_cross_entropy", **tables.get("training", {})}
    return config_from_tables(tables, _SECTIONS, DeepConfig, "mlp")


def basin_sample_index(n_train: int, basin_samples: int) -> np.ndarray:
    """The training samples (evenly spread) whose sample-space basin a deep run records."""
    return np.unique(np.round(np.linspace(0, n_train - 1, basin_samples)).astype(np.int64))


def _noise_inputs(x_train: np.ndarray, n: int, seed: int) -> np.ndarray:
    """n inputs uniform per coordinate between the training set's min and max of that coordinate."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 200])))
    low, high = x_train.min(axis=0), x_train.max(axis=0)
    return low + (high - low) * rng.random((n, x_train.shape[1]))


def _directions(dim: int, n: int, seed: int) -> np.ndarray:
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, 201])))
    u = rng.standard_normal((n, dim))
    return u / np.linalg.norm(u, axis=1, keepdims=True)


class DeepSimulation(TimeLoop):
    """A deep-MLP run: the shared time loop with the deep kernels (see the module docstring)."""

    def __init__(self, config):
        cfg = config.resolved()
        seed = cfg.run.seed
        data = make_classification_data(cfg.task, seed, cfg.input_dim)
        self.arch = cfg.architecture
        self.layers = self.arch.layer_table()
        self.act = self.arch.activation_code
        self.labels_train, self.labels_test = data.labels_train, data.labels_test
        p = data.x_train.shape[0]
        rec = cfg.record
        basin_index = basin_sample_index(p, rec.basin_samples)
        noise = _noise_inputs(data.x_train, rec.noise_inputs, cfg.task.seed)
        n_feat = min(rec.noise_inputs, p)
        weight_n = min(rec.weight_basin_samples, p)
        self.probes = DeepProbes(basin_x=np.ascontiguousarray(data.x_train[basin_index]),
                                 directions=_directions(data.x_train.shape[1], rec.basin_directions, cfg.task.seed),
                                 feature_x=np.ascontiguousarray(data.x_train[:n_feat]),
                                 noise_x=np.ascontiguousarray(noise[:n_feat]),
                                 weight_x=np.ascontiguousarray(data.x_train[:weight_n]),
                                 weight_labels=np.ascontiguousarray(self.labels_train[:weight_n]))
        self.trainer_ints, self.trainer_floats = cfg.training.kernel_arrays(p, self.arch.n_params)
        batch = cfg.training.effective_batch(p) if cfg.training.method != "sde" else p
        work = cfg.run.replicas * batch * self.arch.n_params * 3
        no_waits = np.zeros(0, dtype=np.int64)
        self.basin_index = basin_index
        # no probes or sources of the simple network's kind: the noise inputs and the basin samples
        # are the file's named inputs (``named_inputs``)
        no_probes = np.zeros((0, data.x_train.shape[1]))
        super().__init__(cfg, backend=CpuBackend(),
                         data=Dataset(data.x_train, data.y_train, data.x_test, data.y_test, no_probes,
                                      np.zeros(0, dtype=np.int64)),
                         record_steps=schedule(cfg.run.steps, rec.n_records, rec.spacing, no_waits, no_waits),
                         chunk_steps=max(1, _CHUNK_WORK // max(work, 1)))

    def initial_params(self) -> np.ndarray:
        return self.arch.init_params(self.config.run.seed, self.config.run.replicas)

    def allocate_buffers(self) -> dict:
        return allocate_deep(self.config.observables, self.config.run.replicas, self.config.model.depth,
                             len(self.basin_index))

    def named_inputs(self) -> dict:
        return {"noise_x": (self.probes.noise_x, "random-noise inputs, uniform per coordinate between the training "
                                                 "set's min and max (feature rank, fooling; observable axis 'probe')",
                            ("probe", "input_dim")),
                "basin_index": (self.basin_index, "training samples whose sample-space basin is recorded (indices "
                                                  "into /data/x_train; observable axis 'source')", ("source",))}

    def advance(self, params, s0, s1, status, failed_step):
        advance_deep(params, self.data.x_train, self.labels_train, self.layers, self.act, self.trainer_ints,
                     self.trainer_floats, np.uint64(self.config.run.seed), s0, s1, status, failed_step)

    def measure(self, params, buffers):
        measure_deep(params, self.data.x_train, self.labels_train, self.data.x_test, self.labels_test, self.layers,
                     self.act, self.probes, self.config.record, self.config.run.seed, buffers)


class DeepKind(TimeSteppedKind):
    name = "mlp"
    description = "a deep multilayer perceptron classifier (K softmax outputs) on a K-class task"
    sections = _SECTIONS
    config_class = DeepConfig
    report_sections = ("deep",)
    sweep_report_sections = ("deep_sweep",)
    compile_seconds = 35  # measured by benchmarks/compile.py (benchmarks/RESULTS.md, 2026-12-03)

    def config_from_mapping(self, tables: dict) -> DeepConfig:
        return deep_config_from_mapping(tables)

    def runner(self, config) -> DeepSimulation:
        return DeepSimulation(config)

    def compile_plan(self) -> list[dict]:
        base = dict(run=dict(seed=1, replicas=2, steps=4), model=dict(kind="mlp", input_dim=3, depth=2, width=4),
                    task=dict(kind="gaussian_mixture", classes=2, n_train=8, n_test=4),
                    record=dict(n_records=2, basin_samples=2, basin_directions=2, weight_basin_directions=1,
                                weight_basin_samples=8, noise_inputs=4))
        return [{**base, "training": dict(method="sgd", batch_size=2)},
                {**base, "training": dict(method="sde", noise="sgd")}]


KIND = DeepKind()

