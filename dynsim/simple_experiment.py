"""The simple network as a kind of experiment (``[model] kind = "simple"``, the default).

The one-hidden-layer network of DESIGN.md (M >= 1 outputs), its regression and classification
tasks and every trainer; its config is ``dynsim.config.Config``, its runner ``Simulation``
(the shared ``dynsim.engine.TimeLoop`` with the simple network's kernels), its files run files.
"""
import numpy as np

from .config import SECTIONS, Config
from .engine import TimeLoop, get_backend
from .engine.schedule import schedule, two_time_grid
from .experiment import TimeSteppedKind
from .integrators import SCHEMES
from .losses import LOSSES
from .observables import OBSERVABLES, allocate, measure_on_host
from .tasks import make_dataset

# Work per chunk, in units of (replica x sample x hidden unit x input): about 0.1-0.5 s of compute.
_CHUNK_WORK = 2e8
_MEASURE_BLOCK = 16384  # replicas per float64 block when measuring a float32 run


class Simulation(TimeLoop):
    """A configured ensemble of simple networks, ready to run (``run``; the loop is ``TimeLoop``'s)."""

    def __init__(self, config):
        cfg = config.resolved()
        backend = get_backend(cfg.run.backend)
        data = make_dataset(cfg.task, cfg.model.input_dim, cfg.model.activation, cfg.run.seed,
                            outputs=cfg.model.outputs)
        waits, lags = two_time_grid(cfg.run.steps, cfg.record.two_time_waits, cfg.record.two_time_lags)
        record_steps = schedule(cfg.run.steps, cfg.record.n_records, cfg.record.spacing, waits, lags)
        batch = cfg.training.effective_batch(cfg.task.n_train)
        if cfg.training.method == "sde":  # every stage is a full-batch gradient
            batch = cfg.task.n_train * SCHEMES[cfg.training.scheme].stages
        work = cfg.run.replicas * batch * cfg.model.width * (cfg.model.input_dim + 4)
        chunk_steps = max(1, getattr(backend, "chunk_work", _CHUNK_WORK) // max(work, 1))
        super().__init__(cfg, backend=backend, data=data, record_steps=record_steps, chunk_steps=chunk_steps,
                         waits=waits, lags=lags)
        self.model_ints, self.model_floats = cfg.model.kernel_arrays()
        self.trainer_ints, self.trainer_floats = cfg.training.kernel_arrays(cfg.task.n_train, cfg.model.n_params)
        self.fragility = (int(cfg.task.is_classification), cfg.record.fragility_max_step,
                          cfg.record.fragility_margin)
        self.loss_code = LOSSES[cfg.training.loss]
        self.class_threshold = 0.5 if cfg.task.labels == "01" else 0.0

    def initial_params(self) -> np.ndarray:
        return self.config.model.init_params(self.config.run.seed, self.config.run.replicas, self.config.run.dtype)

    def allocate_buffers(self) -> dict:
        """One record's buffers of every recorded observable."""
        cfg = self.config
        return allocate(cfg.observables, cfg.run.replicas, self.data.x_probe.shape[0], self.data.x_source.shape[0],
                        cfg.model.width, len(self.waits), cfg.model.outputs)

    def advance(self, params, s0, s1, status, failed_step):
        self.backend.advance(params, self.data, self.model_ints, self.model_floats, self.trainer_ints,
                             self.trainer_floats, self.config.run.seed, s0, s1, status, failed_step)

    def measure(self, params, buffers):
        if params.dtype != np.float64:
            self._measure_in_float64(params, buffers)
            return
        self.backend.measure(params, self.data, self.model_ints, self.model_floats, self.loss_code,
                             self.config.training.eta, self.class_threshold, buffers, fragility=self.fragility)

    def _measure_in_float64(self, params, buffers):
        """Observables of a float32 run: computed in float64 from its parameters, a block of replicas
        at a time, by the float64 kernels (no float32 copies of them to compile, and no float64 copy of
        a large ensemble: a block is at most _MEASURE_BLOCK replicas)."""
        for r0 in range(0, params.shape[0], _MEASURE_BLOCK):
            r1 = min(params.shape[0], r0 + _MEASURE_BLOCK)
            block = {name: values[r0:r1] for name, values in buffers.items()}
            self.backend.measure(params[r0:r1].astype(np.float64), self.data, self.model_ints, self.model_floats,
                                 self.loss_code, self.config.training.eta, self.class_threshold, block,
                                 fragility=self.fragility)

    @property
    def host_observables(self) -> bool:
        """CPU-only observables on a backend without kernels for them: computed from a host copy."""
        return self.backend.name != "cpu" and any(OBSERVABLES[n].cpu_only for n in self.config.observables)

    def measure_on_host(self, host_params, buffers):
        measure_on_host(host_params, self.data, self.model_ints, self.model_floats, self.class_threshold, buffers,
                        self.fragility)


def _merge(base: dict, **tables) -> dict:
    out = {name: dict(values) for name, values in base.items()}
    for name, values in tables.items():
        out.setdefault(name, {}).update(values)
    return out


class SimpleKind(TimeSteppedKind):
    name = "simple"
    description = "the one-hidden-layer network f(x) = sum_i a_i act(w_i . x + b_i) + c (M outputs with model.outputs)"
    sections = SECTIONS
    config_class = Config
    report_sections = ("training", "response", "kernel", "features", "fragility", "regions", "saturation",
                       "plasticity", "two_time")
    sweep_report_sections = ("sweep_table",)
    compile_seconds = 25  # measured by benchmarks/compile.py (benchmarks/RESULTS.md, 2026-12-03)
    backends = ("cpu", "cuda")

    def runner(self, config) -> Simulation:
        return Simulation(config)

    def compile_plan(self) -> list[dict]:
        """Tiny configs that together call every kernel a simple-network run can use."""
        base = dict(run=dict(seed=1, replicas=2, steps=4),
                    model=dict(input_dim=2, width=4, output_bias=True),
                    task=dict(kind="teacher", n_train=6, n_test=4, n_probes=3, n_sources=2),
                    record=dict(n_records=2))
        every_observable = ["loss_train", "loss_test", "param_norm", "ntk", "response", "response_linear",
                            "feature_spectrum", "effective_rank", "participation_ratio", "input_grad_norm",
                            "flip_distance", "output"]
        sgd, gd = dict(method="sgd", batch_size=1), dict(method="gd")
        # single-sample SGD on 9 replicas: whole blocks in SIMD lanes (4 float64 or 8 float32 replicas
        # each) and one replica beyond them, so both of its kernels compile
        blocks = dict(seed=1, replicas=9, steps=4)
        plan = [_merge(base, training=training, record=dict(observables=every_observable),
                       run=blocks if training is sgd else base["run"])
                for training in (sgd, gd, dict(method="sde", noise="langevin", temperature=0.01))]
        # float32 runs advance in float32 and measure in float64 (the kernels above)
        plan += [_merge(base, run=dict(blocks, precision="float32") if training is sgd else dict(precision="float32"),
                        training=training) for training in (sgd, gd)]
        plan.append(_merge(base, record=dict(two_time_waits=1, two_time_lags=1)))
        plan.append(_merge(base, model=dict(outputs=2), task=dict(kind="encoding"),
                           training=dict(method="sgd", batch_size=1),
                           record=dict(observables=["loss_train", "ntk_outputs", "response_outputs", "output"])))
        return plan


KIND = SimpleKind()
