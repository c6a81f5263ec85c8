"""The simple network's configuration, and the TOML helpers every kind's config uses.

A config file's ``[model] kind`` picks its kind of experiment (``dynsim.kinds``; default
``simple``), and the kind its tables. The simple network's are ``[run]``, ``[model]``, ``[task]``,
``[training]`` and ``[record]``; every key is optional and has a documented default
(``dynsim config-keys`` lists every kind's).
Validation happens once, here and in the sections' ``__post_init__``: an unknown key, a wrong type,
a value out of range or a contradiction between options raises ``ConfigError`` naming the field.
The *resolved* config (defaults and derived values filled in) is what a run writes into its file.
"""
import dataclasses
import hashlib
import math
import tomllib
from pathlib import Path
from typing import ClassVar

import numpy as np

from .integrators import TrainerSpec
from .losses import LOSSES
from .models.simple import SimpleNet
from .observables import (DEFAULT_OBSERVABLES, MULTI_OUTPUT_ONLY, OBSERVABLES, SINGLE_OUTPUT_ONLY,
                          TWO_TIME_OBSERVABLES, dim_sizes)
from .rng import MAX_STEPS
from .spec import ConfigError, ConfigFileError, Section, option

#: observables measured on the test set: without one (task.n_test = 0) they are not recorded
TEST_SET_OBSERVABLES = ("loss_test", "accuracy_test")
from .tasks import TaskSpec


@dataclasses.dataclass(frozen=True)
class RunSpec(Section):
    SECTION = "run"
    seed: int = option(0, "int", "seed of every random draw (with the replica index)", minimum=0,
                       maximum=2**64 - 1)
    replicas: int = option(16, "int", "independent replicas trained together", minimum=1, maximum=2**32 - 1)
    steps: int = option(10_000, "int", "training steps", minimum=1, maximum=MAX_STEPS - 1)
    backend: str = option("cpu", "str", "compute backend", choices=("cpu", "cuda"))
    on_divergence: str = option("stop", "str", "when a replica's loss becomes non-finite: stop the run, "
                                               "or freeze that replica and go on", choices=("stop", "freeze"))
    precision: str = option("float64", "str", "floating-point type of the parameters and of the training "
                                              "arithmetic; 'float32' halves the memory per replica (CPU backend, "
                                              "discrete trainers)", choices=("float64", "float32"))

    @property
    def dtype(self):
        return np.dtype(self.precision)

    def require_cpu_float64(self, who: str):
        """Refuse another backend or precision for a kind (``who``, e.g. "the deep MLP") that has neither."""
        if self.backend != "cpu":
            raise ConfigError("run.backend", f"got {self.backend!r}; {who} runs on the CPU backend only: set "
                                             "run.backend = 'cpu'")
        if self.precision != "float64":
            raise ConfigError("run.precision", f"got {self.precision!r}; {who} runs in float64 only: set "
                                               "run.precision = 'float64'")


@dataclasses.dataclass(frozen=True)
class RecordSchedule(Section):
    """The ``[record]`` keys every time-stepped kind shares (when, how often, how stored); a kind's
    own ``[record]`` subclasses it, redefines ``observables`` with its names (the field keeps its
    place, so the TOML text, and with it every stored config's sha256, is unchanged) and adds its own."""
    SECTION = "record"
    n_records: int = option(40, "int", "number of record times (before de-duplication of log-spaced steps)",
                            minimum=2, maximum=1_000_000)
    spacing: str = option("log", "str", "record steps log-spaced (plus 0 and the last) or evenly spaced",
                          choices=("log", "linear"))
    observables: tuple = option(None, "str_list", "observables to record (default: all that apply)", optional=True)
    block_records: int = option(16, "int", "records buffered in memory before a block is written",
                                minimum=1, maximum=100_000)
    checkpoint_seconds: float = option(10.0, "float", "at most this much wall time between checkpoints (also at "
                                                      "every block write and, unless checkpoint_steps is set, every "
                                                      "5 % of the run; never more than ~1 % of the run's time)",
                                       minimum=0.0)
    checkpoint_steps: int = option(None, "int", "checkpoint every this many steps, instead of every 5 % of the run",
                                   minimum=1, optional=True)
    compression: str = option("gzip", "str", "HDF5 filter of the record datasets", choices=("gzip", "lzf", "none"))
    params: object = option(None, "all_or_count", "record the parameter vector theta of every replica (true) or of "
                                                  "the first N replicas at every record time, for 'dynsim measure' "
                                                  "afterwards (default: off)", optional=True, maximum=2**32 - 1)

    def recorded_params(self, replicas: int) -> int:
        """How many replicas' parameter vectors are recorded (the first ones), out of ``replicas``."""
        if self.params is True:
            return replicas
        return min(int(self.params or 0), replicas)


@dataclasses.dataclass(frozen=True)
class RecordSpec(RecordSchedule):
    observables: tuple = option(None, "str_list", "observables to record (default: all that apply)",
                                choices=tuple(OBSERVABLES), optional=True)
    two_time_waits: int = option(0, "int", "waiting times t_w of the two-time grid (0: off); with it the "
                                           "autocorrelation and msd observables are recorded and /two_time written",
                                 minimum=0, maximum=256)
    two_time_lags: int = option(16, "int", "lags tau of the two-time grid (log-spaced from 1 step)", minimum=1,
                                maximum=1024)
    fragility_max_step: float = option(1.0, "float", "flip_distance: longest input step searched (input units)",
                                       minimum=0.0, exclusive_minimum=True)
    fragility_margin: float = option(0.1, "float", "flip_distance on a regression task: the output change "
                                                   "that counts as a flip", minimum=0.0, exclusive_minimum=True)


SECTIONS = {"run": RunSpec, "model": SimpleNet, "task": TaskSpec, "training": TrainerSpec, "record": RecordSpec}


class TablesConfig:
    """What the config class of every kind shares: its tables (``TABLES``: table name -> ``Section``
    class, in file order), the check that each field holds its table's type, the TOML text of them
    and the sha256 digest of the resolved config's text (equal configs give equal digests)."""

    TABLES: ClassVar[dict] = {}
    # {(old table, key): (new table, key)}: keys a kind has moved; configs and stored files that use
    # the old place are read as if they used the new one (config_from_tables).
    MOVED_KEYS: ClassVar[dict] = {}

    def _check_tables(self):
        for name, cls in self.TABLES.items():
            if not isinstance(getattr(self, name), cls):
                raise ConfigError(name, f"expected a {cls.__name__}, got {type(getattr(self, name)).__name__}")

    def resolved(self):
        """The config with its derived values filled in (a kind with none returns itself)."""
        return self

    def to_mapping(self) -> dict:
        return {name: getattr(self, name).to_mapping() for name in self.TABLES}

    def to_toml(self) -> str:
        return dump_toml(self.to_mapping())

    def digest(self) -> str:
        return hashlib.sha256(self.resolved().to_toml().encode()).hexdigest()


@dataclasses.dataclass(frozen=True)
class Config(TablesConfig):
    run: RunSpec = dataclasses.field(default_factory=RunSpec)
    model: SimpleNet = dataclasses.field(default_factory=SimpleNet)
    task: TaskSpec = dataclasses.field(default_factory=TaskSpec)
    training: TrainerSpec = dataclasses.field(default_factory=TrainerSpec)
    record: RecordSpec = dataclasses.field(default_factory=RecordSpec)

    TABLES = SECTIONS

    def __post_init__(self):
        self._check_tables()
        t, task = self.training, self.task
        if t.batch_size is not None and t.batch_size > task.n_train:
            raise ConfigError("training.batch_size", f"got {t.batch_size}; must be <= task.n_train "
                                                     f"({task.n_train}), the size of the training set")
        if t.loss in ("cross_entropy", "sigmoid_squared") and not (task.is_classification and task.labels == "pm1"):
            raise ConfigError("training.loss", f"got {t.loss!r}; it needs +1/-1 labels: use task.kind "
                                               "'encoding', 'random_labels' or 'teacher_sign' with task.labels = 'pm1', or "
                                               "loss 'squared'")
        if t.loss not in LOSSES:
            raise ConfigError("training.loss", f"got {t.loss!r}; it is the loss of K-class outputs: set [model] kind = "
                                               "'mlp' (a deep classifier), or use 'squared', 'cross_entropy' or "
                                               "'sigmoid_squared' with the simple network")
        if self.run.precision == "float32" and self.run.backend != "cpu":
            raise ConfigError("run.precision", f"got 'float32' with run.backend = {self.run.backend!r}; float32 "
                                               "runs on the CPU backend only: set run.backend = 'cpu' or "
                                               "run.precision = 'float64'")
        if self.run.precision == "float32" and t.method == "sde":
            raise ConfigError("run.precision", "got 'float32' with training.method = 'sde'; the SDE trainer "
                                               "integrates in float64 only: set run.precision = 'float64' or use "
                                               "a discrete trainer (gd, sgd, langevin)")
        self._check_outputs()
        if task.probe_grid and self.model.input_dim != 2:
            raise ConfigError("task.probe_grid", f"got true with model.input_dim = {self.model.input_dim}; the probe "
                                                 "grid is for input_dim = 2 (D = 1 probes are a grid already)")
        for name in self.record.observables or ():
            if name in TEST_SET_OBSERVABLES and task.n_test == 0:
                raise ConfigError("record.observables", f"got {name!r} with task.n_test = 0: there is no test set "
                                                        "to measure it on; set task.n_test > 0 or remove it")
            spec = OBSERVABLES[name]
            if spec.classification_only and not task.is_classification:
                raise ConfigError("record.observables", f"got {name!r}; it needs a classification task, "
                                                        f"and task.kind = {task.kind!r} is regression")
            if spec.two_time and self.record.two_time_waits == 0:
                raise ConfigError("record.observables", f"got {name!r}; it is a two-time quantity: set "
                                                        "record.two_time_waits > 0 (it is then recorded anyway)")

    def _check_outputs(self):
        """M > 1 outputs: the encoding task's one-hot regions, CPU discrete trainers in float64."""
        outputs, listed = self.model.outputs, self.record.observables or ()
        if outputs == 1:
            for name in listed:
                if name in MULTI_OUTPUT_ONLY:
                    raise ConfigError("record.observables", f"got {name!r}; it is for model.outputs > 1: use "
                                                            f"{MULTI_OUTPUT_ONLY[name]!r} with one output")
            return
        fix = "or set model.outputs = 1"
        if self.task.kind != "encoding":
            raise ConfigError("model.outputs", f"got {outputs} with task.kind = {self.task.kind!r}; M outputs need "
                                               f"the M-region encoding task: set task.kind = 'encoding' {fix}")
        if self.run.backend != "cpu" or self.run.precision != "float64" or self.training.method == "sde":
            raise ConfigError("model.outputs", f"got {outputs}; M > 1 outputs run on the CPU backend, in float64, "
                                               f"with the gd, sgd or langevin trainer {fix}")
        for name in listed:
            if name in SINGLE_OUTPUT_ONLY:
                instead = SINGLE_OUTPUT_ONLY[name]
                raise ConfigError("record.observables", f"got {name!r} with model.outputs = {outputs}; "
                                  + (f"use {instead!r}, its M-output form" if instead else
                                     "it is defined for one output only"))

    @property
    def observables(self) -> tuple[str, ...]:
        if self.record.observables is not None:
            names = tuple(self.record.observables)
        else:
            names = tuple(n for n in DEFAULT_OBSERVABLES
                          if (self.task.is_classification or not OBSERVABLES[n].classification_only)
                          and (self.task.n_test > 0 or n not in TEST_SET_OBSERVABLES))
            if self.model.outputs > 1:  # the M-output forms of the NTK and the response
                names = tuple(dict.fromkeys(SINGLE_OUTPUT_ONLY.get(n) or n for n in names))
        if self.record.two_time_waits > 0:
            names += tuple(n for n in TWO_TIME_OBSERVABLES if n not in names)
        return names

    def resolved(self) -> "Config":
        """The same config with derived values filled in (what a run writes to its file)."""
        task = dataclasses.replace(self.task, seed=self.run.seed if self.task.seed is None else self.task.seed,
                                   teacher_activation=self.task.teacher_activation or self.model.activation)
        training = self.training.resolved(self.task.n_train)
        record = dataclasses.replace(self.record, observables=self.observables)
        return dataclasses.replace(self, task=task, training=training, record=record)

    # -- what the store asks of a config (every time-stepped kind's config answers the same) --
    KIND = "simple"

    def model_attributes(self) -> dict:
        return self.model.attributes()

    @property
    def param_layout(self) -> str:
        return self.model.param_layout

    def training_attributes(self) -> dict:
        return self.training.attributes(self.task.n_train)

    def observable_specs(self) -> dict:
        return OBSERVABLES

    def dim_sizes(self, n_probes: int, n_sources: int, n_waits: int = 0) -> dict[str, int]:
        return dim_sizes(n_probes, n_sources, self.model.width, n_waits, self.model.outputs)


#: [record] keys that decide how a file is written, not what it holds: configs differing only in them
#: give the same records bit for bit (a checkpoint's cadence, the block size, the HDF5 filter)
STORAGE_KEYS = ("block_records", "checkpoint_seconds", "checkpoint_steps", "compression")


def results_digest(config) -> str:
    """sha256 of a config's resolved TOML without its ``STORAGE_KEYS``: equal for two configs whose
    runs write the same numbers (``resume --config`` and sweeps compare this, so that a changed
    default of how files are stored does not make an earlier run's file foreign)."""
    config = config.resolved() if hasattr(config, "resolved") else config
    tables = {name: dict(values) for name, values in config.to_mapping().items()}
    for key in STORAGE_KEYS:
        tables.get("record", {}).pop(key, None)
    return hashlib.sha256(dump_toml(tables).encode()).hexdigest()


def config_from_tables(tables: dict, sections: dict, config_class, kind: str):
    """``config_class(**{table: Section.from_mapping(...)})`` for the TOML tables of one kind; a table
    the kind does not have is refused, naming the tables it has."""
    if not isinstance(tables, dict):
        raise ConfigError("<top>", f"expected tables, got {type(tables).__name__}")
    for key, value in tables.items():
        if key in sections:
            continue
        allowed = ", ".join("[" + s + "]" for s in sections)
        if isinstance(value, dict):
            raise ConfigError(key, f"unknown table [{key}] for a {kind} config; allowed tables: {allowed}")
        owners = [name for name, cls in sections.items() if key in {f.name for f in dataclasses.fields(cls)}]
        hint = f": put it in its table, e.g. [{owners[0]}] {key} = ..." if owners else ""
        raise ConfigError(key, f"a key outside any table{hint} (a {kind} config has the tables {allowed})")
    tables = _move_keys(tables, getattr(config_class, "MOVED_KEYS", {}))
    return config_class(**{name: cls.from_mapping(tables.get(name, {}), name) for name, cls in sections.items()})


def _move_keys(tables: dict, moved: dict) -> dict:
    """``tables`` with every key of ``moved`` taken from its old table to its new one (a copy); a key
    given in both places is refused, naming both."""
    tables = {name: dict(values) if isinstance(values, dict) else values for name, values in tables.items()}
    for (old_table, old_key), (new_table, new_key) in moved.items():
        old = tables.get(old_table)
        if not isinstance(old, dict) or old_key not in old:
            continue
        new = tables.setdefault(new_table, {})
        if not isinstance(new, dict):
            continue  # the table's own check names the bad value
        if new_key in new:
            raise ConfigError(f"{old_table}.{old_key}", f"given together with {new_table}.{new_key}; it has moved "
                                                        f"there: remove {old_table}.{old_key}")
        new[new_key] = old.pop(old_key)
    return tables


def parse_toml(text: str, source: str = "<string>") -> dict:
    """The tables of a TOML text; ``ConfigError`` naming ``source`` and the syntax error otherwise."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigFileError(source, f"not valid TOML: {exc}") from None


def read_toml_file(path) -> dict:
    """The tables of a config file; ``ConfigError`` naming the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigFileError(str(path), "no such config file") from None
    except IsADirectoryError:
        raise ConfigFileError(str(path), "is a directory; give the path of a TOML config file") from None
    except PermissionError:
        raise ConfigFileError(str(path), "permission denied: the config file cannot be read") from None
    except UnicodeDecodeError as exc:
        raise ConfigFileError(str(path), f"is not UTF-8 text ({exc.reason} at byte {exc.start}); is it a "
                                         "TOML config?") from None
    return parse_toml(text, str(path))


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(tables: dict) -> str:
    """TOML text for {table: {key: scalar or list}}; keys with value None are omitted."""
    lines = []
    for table, values in tables.items():
        lines.append(f"[{table}]")
        lines.extend(f"{key} = {_toml_value(v)}" for key, v in values.items() if v is not None)
        lines.append("")
    return "\n".join(lines)
