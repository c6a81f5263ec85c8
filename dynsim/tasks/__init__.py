"""Training data, test data, probes and response sources.

All replicas of a run share one data set (they differ in initialisation and noise). Data are drawn
on the host from ``numpy.random.Generator(PCG64)`` seeded by the task seed, and stored in the HDF5
file, so that a file alone reproduces its data.

Tasks (as defined in dynsim):

* ``encoding``: inputs in [0, 1]^D (a regular grid when D = 1), two regions split at
  ``boundary`` along the first coordinate; the target is +1 / -1 (or 1 / 0) by region. This is
  the M = 1 case of the encoding problem of the simple-network paper (see docs).
* ``teacher``: x ~ N(0, I_D), y = teacher(x) + noise, the teacher a random simple network.
* ``random_labels``: x ~ N(0, I_D), y = +-1 with equal probability, independent of x.
* ``teacher_sign``: x ~ N(0, I_D), y = sign(teacher(x)) (+1 / -1, or 1 / 0): a classification task
  with a curved decision boundary, the teacher a random simple network as for ``teacher``.

``label_noise`` flips that fraction of the training labels of a classification task (chosen at
random, exactly round(label_noise * n_train) of them); test labels stay clean.

Probes (the inputs at which NTK and response are recorded) are a dense grid over the input domain
when D = 1, random inputs otherwise. Sources (the samples whose one-step update defines the
response) are ``n_sources`` training samples evenly spread over the training set.
"""
import dataclasses
import math

import numpy as np

from ..models.activations import ACTIVATIONS
from ..models.simple import SimpleNet
from ..spec import Section, option

TASK_KINDS = ("encoding", "teacher", "random_labels", "teacher_sign")
_TASK_TAG = {name: i for i, name in enumerate(TASK_KINDS)}


@dataclasses.dataclass(frozen=True)
class TaskSpec(Section):
    SECTION = "task"
    kind: str = option("encoding", "str", "data set", choices=TASK_KINDS)
    n_train: int = option(32, "int", "training samples P", minimum=1, maximum=10_000_000)
    n_test: int = option(256, "int", "test samples", minimum=0, maximum=10_000_000)
    n_probes: int = option(16, "int", "probe inputs for the NTK and response grids", minimum=1, maximum=4096)
    n_sources: int = option(4, "int", "training samples used as response sources", minimum=1, maximum=4096)
    seed: int = option(None, "int", "data seed (default: run.seed)", minimum=0, maximum=2**63 - 1, optional=True)
    labels: str = option("pm1", "str", "classification targets: +1/-1 ('pm1') or 1/0 ('01')", choices=("pm1", "01"))
    boundary: float = option(0.5, "float", "encoding: region edge along the first input coordinate",
                             minimum=0.0, maximum=1.0)
    teacher_width: int = option(8, "int", "teacher: hidden units of the teacher network", minimum=1, maximum=100_000)
    teacher_activation: str = option(None, "str", "teacher: activation (default: the model's)",
                                     choices=tuple(ACTIVATIONS), optional=True)
    noise_std: float = option(0.0, "float", "teacher: std of Gaussian label noise", minimum=0.0)
    label_noise: float = option(0.0, "float", "classification: fraction of training labels flipped", minimum=0.0,
                                maximum=1.0)
    probe_grid: bool = option(False, "bool", "encoding, input_dim = 2: probes on a regular grid over [0, 1]^2 "
                                             "(n_probes a square number; D = 1 probes are always a grid)")

    @property
    def is_classification(self) -> bool:
        return self.kind in ("encoding", "random_labels", "teacher_sign")

    def check(self):
        if self.n_sources > self.n_train:
            self.fail("n_sources", f"got {self.n_sources}; must be <= task.n_train ({self.n_train}): "
                                   "sources are training samples")
        if self.labels == "01" and self.kind == "random_labels":
            self.fail("labels", "got '01'; random_labels uses +1/-1 labels only")
        if self.probe_grid and (self.kind != "encoding" or math.isqrt(self.n_probes) ** 2 != self.n_probes):
            self.fail("probe_grid", f"needs task.kind = 'encoding' and a square task.n_probes (got {self.kind!r}, "
                                    f"{self.n_probes}): e.g. n_probes = {max(4, math.isqrt(self.n_probes) ** 2)}")
        if self.label_noise > 0.0 and not self.is_classification:
            self.fail("label_noise", f"got {self.label_noise}; label noise flips classes, and task.kind = "
                                     f"{self.kind!r} is regression: use noise_std, or a classification task")


@dataclasses.dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray   # [P, D]
    y_train: np.ndarray   # [P]
    x_test: np.ndarray    # [P_test, D]
    y_test: np.ndarray    # [P_test]
    x_probe: np.ndarray   # [n_probes, D]
    source_index: np.ndarray  # [n_sources] indices into the training set

    @property
    def x_source(self) -> np.ndarray:
        return self.x_train[self.source_index]

    @property
    def y_source(self) -> np.ndarray:
        return self.y_train[self.source_index]


def _grid(n: int, low: float, high: float) -> np.ndarray:
    """n cell-centred points in [low, high] as an [n, 1] array."""
    return (low + (high - low) * (np.arange(n) + 0.5) / n)[:, None]


def _simple_teacher(rng, input_dim: int, width: int, activation: str):
    """A random simple network (standard scaling, no biases) and a function evaluating it."""
    teacher = SimpleNet(input_dim=input_dim, width=width, activation=activation, hidden_bias=False)
    theta = np.empty(teacher.n_params)
    blocks = teacher.unpack(theta)
    blocks["W"][...] = rng.standard_normal((width, input_dim)) / math.sqrt(input_dim)
    blocks["a"][...] = rng.standard_normal(width) / math.sqrt(width)
    return lambda x: teacher.outputs_of(theta, x)


def region_index(x: np.ndarray, regions: int) -> np.ndarray:
    """Encoding task with M regions: the index of the region of each input, M equal slices of [0, 1]
    along the first coordinate (edges k / M)."""
    return np.minimum(regions - 1, np.floor(x[:, 0] * regions).astype(np.int64))


def make_dataset(task: TaskSpec, input_dim: int, model_activation: str, run_seed: int, outputs: int = 1) -> Dataset:
    """Build the data of a task; deterministic in (task, input_dim, seed, outputs).

    ``outputs`` = M > 1 (encoding task only): M regions, one-hot targets y [n, M] (+1 / -1, or 1 / 0).
    """
    seed = run_seed if task.seed is None else task.seed
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _TASK_TAG[task.kind]])))
    d = input_dim
    if task.kind == "encoding":
        x_train = _grid(task.n_train, 0.0, 1.0) if d == 1 else rng.uniform(0.0, 1.0, (task.n_train, d))
        x_test = rng.uniform(0.0, 1.0, (task.n_test, d))
        x_probe = _grid(task.n_probes, 0.0, 1.0) if d == 1 else rng.uniform(0.0, 1.0, (task.n_probes, d))
        if task.probe_grid and d == 2:
            side = math.isqrt(task.n_probes)
            axis = _grid(side, 0.0, 1.0)[:, 0]
            gx, gy = np.meshgrid(axis, axis)  # probe p = row * side + column: x0 varies fastest
            x_probe = np.column_stack([gx.ravel(), gy.ravel()])
        low = -1.0 if task.labels == "pm1" else 0.0

        def label(x):
            if outputs > 1:
                onehot = np.full((x.shape[0], outputs), low)
                onehot[np.arange(x.shape[0]), region_index(x, outputs)] = 1.0
                return onehot
            return np.where(x[:, 0] >= task.boundary, 1.0, low)
        y_train, y_test = label(x_train), label(x_test)
    else:
        x_train = rng.standard_normal((task.n_train, d))
        x_test = rng.standard_normal((task.n_test, d))
        x_probe = _grid(task.n_probes, -3.0, 3.0) if d == 1 else rng.standard_normal((task.n_probes, d))
        if task.kind == "teacher":
            teacher = _simple_teacher(rng, d, task.teacher_width, task.teacher_activation or model_activation)
            y_train = teacher(x_train) + task.noise_std * rng.standard_normal(task.n_train)
            y_test = teacher(x_test) + task.noise_std * rng.standard_normal(task.n_test)
        elif task.kind == "teacher_sign":
            teacher = _simple_teacher(rng, d, task.teacher_width, task.teacher_activation or model_activation)
            low = -1.0 if task.labels == "pm1" else 0.0
            y_train = np.where(teacher(x_train) >= 0.0, 1.0, low)
            y_test = np.where(teacher(x_test) >= 0.0, 1.0, low) if task.n_test else np.zeros(0)
        else:
            y_train = rng.choice([-1.0, 1.0], task.n_train)
            y_test = rng.choice([-1.0, 1.0], task.n_test)
    if task.label_noise > 0.0:
        # a separate stream, so that the same task without noise has the same inputs and clean labels
        noise_rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, _TASK_TAG[task.kind], 1])))
        flip = noise_rng.permutation(task.n_train)[: int(round(task.label_noise * task.n_train))]
        low = -1.0 if task.labels == "pm1" else 0.0
        y_train = np.array(y_train, dtype=np.float64)
        y_train[flip] = np.where(y_train[flip] == 1.0, low, 1.0)
    source_index = np.unique(np.round(np.linspace(0, task.n_train - 1, task.n_sources)).astype(np.int64))
    if source_index.size < task.n_sources:  # only when n_sources is close to n_train
        source_index = np.arange(task.n_sources, dtype=np.int64)
    return Dataset(np.ascontiguousarray(x_train, dtype=np.float64), np.ascontiguousarray(y_train, dtype=np.float64),
                   np.ascontiguousarray(x_test, dtype=np.float64).reshape(task.n_test, d),
                   np.ascontiguousarray(y_test, dtype=np.float64).reshape((task.n_test,) + np.shape(y_train)[1:]),
                   np.ascontiguousarray(x_probe, dtype=np.float64), source_index)
