"""Compiled kernels and the on-disk cache: say when a run compiles, and compile ahead of time.

Numba compiles a kernel the first time it is called with new argument types, and keeps it in its
on-disk cache (``dynsim/__init__.py`` keys that cache on dynsim's source). A cold cache costs a
first run seconds to tens of seconds; every later run loads the kernels in well under a second.

* ``compile_notice``: while it is active, the first time Numba starts compiling (a kernel missing
  from the cache), one line goes to stderr naming the kind of run and the expected compile time.
  Numba's ``numba:compile`` event starts only on a cache miss, so a warm run prints nothing.
* ``precompile``: compiles every kernel a kind of experiment can use, by running a few tiny configs
  that between them take every kernel path (trainers, precisions, observables), into a temporary
  folder. ``dynsim compile`` calls it so that a user, a cluster image or a Dask worker pays the
  compile once after installing.
"""
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

from numba.core import event

#: Cold compile time of a first run of each kind of experiment on a 2-core machine (seconds, measured
#: by benchmarks/compile.py; see benchmarks/RESULTS.md). Only used to tell the user what to expect.
COMPILE_SECONDS = {"simple": 25, "mlp": 35, "maxnorm_chain": 12}


class _FirstCompile(event.Listener):
    """Prints ``message`` once, when the first compilation starts; records when compiling began."""

    def __init__(self, message: str, stream):
        self.message = message
        self.stream = stream
        self.started = None
        self._lock = threading.Lock()

    def on_start(self, ev):
        with self._lock:
            if self.started is None:
                self.started = time.perf_counter()
                print(self.message, file=self.stream, flush=True)

    def on_end(self, ev):
        pass


@contextlib.contextmanager
def compile_notice(kind: str | None, enabled: bool = True, stream=None):
    """Within the block, say once on ``stream`` (stderr) that kernels are being compiled, if any are.

    ``kind`` is the experiment kind (``[model] kind``), or None where it is not known yet (resume).
    """
    if not enabled:
        yield None
        return
    seconds = COMPILE_SECONDS.get(kind, max(COMPILE_SECONDS.values()))
    what = f"this kind of run ({kind})" if kind else "this kind of run"
    listener = _FirstCompile(f"dynsim: compiling kernels for {what}, once: about {seconds} s on a 2-core machine "
                             "(later runs load them from the cache)", stream or sys.stderr)
    event.register("numba:compile", listener)
    try:
        yield listener
    finally:
        event.unregister("numba:compile", listener)


def _simple_plan() -> list[dict]:
    """Tiny simple-network configs that together call every kernel a simple-network run can use."""
    base = dict(run=dict(seed=1, replicas=2, steps=4),
                model=dict(input_dim=2, width=4, output_bias=True),
                task=dict(kind="teacher", n_train=6, n_test=4, n_probes=3, n_sources=2),
                record=dict(n_records=2))
    every_observable = ["loss_train", "loss_test", "param_norm", "ntk", "response", "response_linear",
                        "feature_spectrum", "effective_rank", "participation_ratio", "input_grad_norm",
                        "flip_distance", "output"]
    sgd, gd = dict(method="sgd", batch_size=1), dict(method="gd")
    plan = [_merge(base, training=training, record=dict(observables=every_observable))
            for training in (sgd, gd, dict(method="sde", noise="langevin", temperature=0.01))]
    # float32 runs advance in float32 and measure in float64 (the kernels above)
    plan += [_merge(base, run=dict(precision="float32"), training=training) for training in (sgd, gd)]
    plan.append(_merge(base, record=dict(two_time_waits=1, two_time_lags=1)))
    plan.append(_merge(base, model=dict(outputs=2), task=dict(kind="encoding"),
                       training=dict(method="sgd", batch_size=1),
                       record=dict(observables=["loss_train", "ntk_outputs", "response_outputs", "output"])))
    return plan


def _mlp_plan() -> list[dict]:
    base = dict(run=dict(seed=1, replicas=2, steps=4), model=dict(kind="mlp", depth=2, width=4),
                task=dict(kind="gaussian_mixture", input_dim=3, classes=2, n_train=8, n_test=4),
                record=dict(n_records=2, basin_samples=2, basin_directions=2, weight_basin_directions=1,
                            weight_basin_samples=8, noise_inputs=4))
    return [_merge(base, training=dict(method="sgd", batch_size=2)),
            _merge(base, training=dict(method="sde", noise="sgd"))]


def _chain_plan() -> list[dict]:
    return [dict(run=dict(seed=1, replicas=2), model=dict(kind="maxnorm_chain", width=4, candidates=6, depth=2),
                 inputs=dict(source="gaussian", n_test=2))]


#: Each kind's tiny configs (mappings as a TOML file would give them).
PLANS = {"simple": _simple_plan, "mlp": _mlp_plan, "maxnorm_chain": _chain_plan}


def _merge(base: dict, **tables) -> dict:
    out = {name: dict(values) for name, values in base.items()}
    for name, values in tables.items():
        out.setdefault(name, {}).update({k: v for k, v in values.items() if v is not None})
    return out


def precompile(kinds, progress: bool = True) -> dict[str, float]:
    """Compile every kernel of each kind in ``kinds`` (or load it from the cache); seconds per kind."""
    from tqdm import tqdm

    from .chain_experiment import chain_config_from_mapping, is_chain_mapping, run_chain
    from .config import config_from_mapping
    from .engine import make_simulation

    seconds = {}
    configs = [(kind, mapping) for kind in kinds for mapping in PLANS[kind]()]
    bar = tqdm(total=len(configs), unit="config", desc="dynsim compile", disable=not progress, leave=False)
    with tempfile.TemporaryDirectory(prefix="dynsim-compile-") as folder:
        for i, (kind, mapping) in enumerate(configs):
            bar.set_postfix_str(kind)
            start = time.perf_counter()
            path = Path(folder) / f"{i}.h5"
            if is_chain_mapping(mapping):
                run_chain(chain_config_from_mapping(mapping), path, overwrite=True, progress=False)
            else:
                make_simulation(config_from_mapping(mapping)).run(path, overwrite=True, progress=False)
            seconds[kind] = seconds.get(kind, 0.0) + time.perf_counter() - start
            bar.update(1)
    bar.close()
    return seconds
