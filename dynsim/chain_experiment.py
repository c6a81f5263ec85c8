"""The max-norm chain experiment: config -> inputs -> chains built and measured block by block -> HDF5.

A config with ``[model] kind = "maxnorm_chain"`` is run by ``dynsim run`` like a training config,
but nothing is trained: every replica is one chain built from the single training input
(``dynsim.models.chain``), and the file records, per layer, how every probe's output relates to
the training input's (DESIGN.md section 4: "collapse of output features with depth"; the wormhole
paper, ../shared/papers/companions.md A). Tables:

    [run]       seed, replicas, block_replicas
    [model]     kind = "maxnorm_chain", width (k), candidates (n), depth (L), selection, layer_output
    [inputs]    source ("gaussian" | "uniform" | "digits"), train_index, message_index, n_test,
                negatives, n_noise
    [wormhole]  alpha

Inputs (all of dimension k; drawn on the host from numpy's PCG64 seeded by run.seed, and stored
in the file): the training input u, the wormhole's message m, and the probes, in groups:

* ``data``: n_test further inputs from the source (digits: the first n_test images other than the
  training and message images, pixel counts / 16);
* ``negated``: -v for every ``data`` probe (``negatives = true``; the flip-label experiment);
* ``noise``: n_noise inputs of uniform noise in [0, 1]^k (unrelated keys for the wormhole).
"""
import dataclasses
import time

import numpy as np

from .config import TablesConfig, config_from_tables, parse_toml, results_digest
from .engine import raise_if_stop_requested
from .models.chain import MEASURES, MaxNormChain
from .spec import ConfigError, Section, option
from .store import STATUS_COMPLETED, STATUS_INTERRUPTED, ChainReader, ChainWriter, StoreError

SOURCES = ("gaussian", "uniform", "digits")
GROUP_NAMES = ("data", "negated", "noise")
_DIGITS_DIM, _DIGITS_COUNT = 64, 1797
_BLOCK_BYTES = 64 << 20  # measures of one block of replicas held in memory


@dataclasses.dataclass(frozen=True)
class ChainRunSpec(Section):
    SECTION = "run"
    seed: int = option(0, "int", "seed of the chains' random rows (with the replica index) and of the inputs",
                       minimum=0, maximum=2**63 - 1)
    replicas: int = option(16, "int", "independent chains", minimum=1, maximum=2**32 - 1)
    block_replicas: int = option(None, "int", "chains built and written per block (default: about 64 MiB of "
                                               "measures)", minimum=1, optional=True)


@dataclasses.dataclass(frozen=True)
class ChainInputs(Section):
    SECTION = "inputs"
    source: str = option("gaussian", "str", "where the training input, message and data probes come from: "
                                            "N(0, I_k), U(0, 1)^k or the shipped 8x8 digits (k = 64)",
                         choices=SOURCES)
    train_index: int = option(0, "int", "digits: image used as the training input", minimum=0,
                              maximum=_DIGITS_COUNT - 1)
    message_index: int = option(1, "int", "digits: image used as the wormhole's message", minimum=0,
                                maximum=_DIGITS_COUNT - 1)
    n_test: int = option(200, "int", "probes drawn from the source (group 'data')", minimum=0, maximum=10_000_000)
    negatives: bool = option(False, "bool", "also probe -v for every data probe (group 'negated')")
    n_noise: int = option(0, "int", "probes of uniform noise in [0, 1]^k (group 'noise')", minimum=0,
                          maximum=10_000_000)

    def check(self):
        if self.source == "digits":
            if self.train_index == self.message_index:
                self.fail("message_index", f"got {self.message_index}, the same image as inputs.train_index; "
                                           "choose another image for the message")
            if self.n_test > _DIGITS_COUNT - 2:
                self.fail("n_test", f"got {self.n_test}; the digits source has {_DIGITS_COUNT - 2} images besides "
                                    "the training input and the message")
        if self.n_test + self.n_noise == 0:
            self.fail("n_test", "got 0 with inputs.n_noise = 0: there would be no probes; set n_test or n_noise > 0")


@dataclasses.dataclass(frozen=True)
class WormholeSpec(Section):
    SECTION = "wormhole"
    alpha: float = option(1e4, "float", "scale alpha of the keys in c = m - alpha H v/|H v|", minimum=0.0,
                          exclusive_minimum=True)


_CHAIN_SECTIONS = {"run": ChainRunSpec, "model": MaxNormChain, "inputs": ChainInputs, "wormhole": WormholeSpec}


@dataclasses.dataclass(frozen=True)
class ChainConfig(TablesConfig):
    KIND = "maxnorm_chain"
    TABLES = _CHAIN_SECTIONS

    run: ChainRunSpec = dataclasses.field(default_factory=ChainRunSpec)
    model: MaxNormChain = dataclasses.field(default_factory=MaxNormChain)
    inputs: ChainInputs = dataclasses.field(default_factory=ChainInputs)
    wormhole: WormholeSpec = dataclasses.field(default_factory=WormholeSpec)

    def __post_init__(self):
        if self.inputs.source == "digits" and self.model.width != _DIGITS_DIM:
            raise ConfigError("model.width", f"got {self.model.width}; inputs.source = 'digits' has 8x8 = 64 pixels: "
                                             "set model.width = 64 (and model.candidates >= 64)")

    @property
    def block_replicas(self) -> int:
        if self.run.block_replicas is not None:
            return min(self.run.block_replicas, self.run.replicas)
        n_probes = self.inputs.n_test * (2 if self.inputs.negatives else 1) + self.inputs.n_noise
        per_replica = (self.model.depth + 1) * (n_probes * len(MEASURES) + 1) * 8
        return max(1, min(self.run.replicas, _BLOCK_BYTES // per_replica))



def chain_config_from_mapping(data: dict) -> ChainConfig:
    return config_from_tables(data, _CHAIN_SECTIONS, ChainConfig, "maxnorm_chain")


def parse_chain_config(text: str, source: str = "<string>") -> ChainConfig:
    return chain_config_from_mapping(parse_toml(text, source))


@dataclasses.dataclass(frozen=True)
class ChainInputSet:
    train: np.ndarray         # [k]
    message: np.ndarray       # [k]
    probes: np.ndarray        # [probe, k]
    probe_group: np.ndarray   # [probe] index into group_names
    group_names: tuple = GROUP_NAMES


def make_inputs(config: ChainConfig) -> ChainInputSet:
    """The training input, message and probes of a chain config (deterministic in run.seed)."""
    spec, k = config.inputs, config.model.width
    rng = np.random.default_rng(config.run.seed)
    if spec.source == "digits":
        from .datasets import load_digits

        images, _ = load_digits()
        train, message = images[spec.train_index], images[spec.message_index]
        others = [i for i in range(len(images)) if i not in (spec.train_index, spec.message_index)]
        data = images[others[: spec.n_test]]
    else:
        draw = (lambda *shape: rng.normal(size=shape)) if spec.source == "gaussian" else (lambda *shape: rng.random(shape))
        train, message, data = draw(k), draw(k), draw(spec.n_test, k)
    groups = [data]
    labels = [np.zeros(len(data), dtype=np.int64)]
    if spec.negatives:
        groups.append(-data)
        labels.append(np.ones(len(data), dtype=np.int64))
    if spec.n_noise:
        groups.append(rng.random((spec.n_noise, k)))
        labels.append(np.full(spec.n_noise, 2, dtype=np.int64))
    return ChainInputSet(np.asarray(train, dtype=np.float64), np.asarray(message, dtype=np.float64),
                         np.ascontiguousarray(np.concatenate(groups), dtype=np.float64), np.concatenate(labels))


@dataclasses.dataclass
class ChainResult:
    path: str
    code: str
    message: str
    replicas_done: int
    written: bool = True  # False when the command had nothing to do (resuming a complete file)

    @property
    def ok(self) -> bool:
        return self.code == STATUS_COMPLETED


def run_chain(config: ChainConfig, path, *, overwrite: bool = False, progress: bool | None = None) -> ChainResult:
    """Build and measure every chain of ``config``, writing ``path`` block of replicas by block.

    Ctrl-C (or SIGTERM through dynsim's handlers) between blocks stops with status 'interrupted';
    the replicas written so far stay committed.
    """
    inputs = make_inputs(config)
    if not np.any(inputs.train):
        raise ConfigError("inputs.train_index", "the training input is the zero vector, which selects nothing; "
                                                "choose another input")
    writer = ChainWriter(path, config=config, inputs=inputs, measures=MEASURES, overwrite=overwrite)
    return _build(config, inputs, writer, progress)


def resume_chain(path, *, progress: bool | None = None, expect_config=None) -> ChainResult:
    """Build the replicas a chain file is missing (after a kill or an interrupt), from its own config.

    Replica r's chain depends on (seed, r) only, so the resumed file equals an uninterrupted run's.
    With ``expect_config``, a file made from a different config is refused.
    """
    with ChainReader(path) as reader:
        config = parse_chain_config(reader.config_text, f"{path}:/config")
        if expect_config is not None and results_digest(expect_config) != results_digest(config):
            raise StoreError(f"{path} was made with a different config (sha256 {config.digest()[:12]}..., given "
                             f"{expect_config.digest()[:12]}...); refusing to resume it with this one")
        if reader.status["code"] == STATUS_COMPLETED:
            return ChainResult(str(path), STATUS_COMPLETED, f"{path} is already complete; nothing to resume",
                               reader.replicas_done, written=False)
        stored = reader.inputs()
    inputs = make_inputs(config)
    if not (np.array_equal(stored["probes"], inputs.probes) and np.array_equal(stored["train"], inputs.train)):
        raise StoreError(f"{path}: its stored inputs differ from the ones its config makes now (another dynsim "
                         "version or data set?); rerun it instead of resuming")
    return _build(config, inputs, ChainWriter.reopen(path, MEASURES), progress)


def _build(config, inputs, writer, progress) -> ChainResult:
    model, seed, replicas = config.model, config.run.seed, config.run.replicas
    path = writer.path
    block = config.block_replicas
    show = progress if progress is not None else False
    start = time.perf_counter()
    with writer:
        writer.set_status("running", f"building chains from replica {writer.replicas_done}")
        try:
            for first in range(writer.replicas_done, replicas, block):
                raise_if_stop_requested()
                count = min(block, replicas - first)
                gains, measures = model.measure(seed, first, count, inputs.train, inputs.probes, inputs.message,
                                                config.wormhole.alpha)
                writer.write_block(first, gains, measures)
                if show:
                    print(f"dynsim: chains {first + count}/{replicas}", flush=True)
        except KeyboardInterrupt:
            message = f"interrupted after {writer.replicas_done} of {replicas} replicas"
            writer.set_status(STATUS_INTERRUPTED, message)
            return ChainResult(str(path), STATUS_INTERRUPTED, message, writer.replicas_done)
        seconds = time.perf_counter() - start
        message = (f"built {replicas} chains of depth {model.depth} (k={model.width}, n={model.candidates}) and "
                   f"measured {len(inputs.probes)} probes in {seconds:.1f} s")
        writer.set_status(STATUS_COMPLETED, message)
    return ChainResult(str(path), STATUS_COMPLETED, message, replicas)


class ChainKind:
    """The max-norm chain behind the ``dynsim.experiment.ExperimentKind`` contract (block-wise)."""

    name = "maxnorm_chain"
    description = "random max-norm chains built from one training input and measured per layer (nothing trained)"
    sections = _CHAIN_SECTIONS
    report_sections = ("chain",)
    sweep_report_sections = ("chain_points",)
    compile_seconds = 12  # measured by benchmarks/compile.py (benchmarks/RESULTS.md, 2026-12-03)

    def config_from_mapping(self, tables: dict) -> ChainConfig:
        return chain_config_from_mapping(tables)

    def compile_plan(self) -> list[dict]:
        return [dict(run=dict(seed=1, replicas=2), model=dict(kind="maxnorm_chain", width=4, candidates=6, depth=2),
                     inputs=dict(source="gaussian", n_test=2))]

    def with_backend(self, config, backend: str):
        if backend != "cpu":
            raise ConfigError("run.backend", f"got {backend!r}; the maxnorm_chain experiment runs on the CPU only: "
                                             "drop --backend")
        return config

    def run(self, config, path, *, overwrite=False, progress=None) -> ChainResult:
        # the CLI passes None unless quiet: the chain's progress lines go to stdout, tty or not
        return run_chain(config, path, overwrite=overwrite, progress=progress is None or progress)

    def resume(self, path, *, progress=None, expect_config=None) -> ChainResult:
        return resume_chain(path, progress=progress is None or progress, expect_config=expect_config)

    def status(self, path, group=None) -> str:
        with ChainReader(path, group) as reader:
            return reader.status["code"]

    def config_text(self, path, group=None) -> str:
        with ChainReader(path, group) as reader:
            return reader.config_text

    def summary(self, path, group=None) -> str:
        with ChainReader(path, group) as reader:
            return reader.summary()


KIND = ChainKind()
