"""Compiled kernels and the on-disk cache: say when a run compiles, and compile ahead of time.

Numba compiles a kernel the first time it is called with new argument types, and keeps it in its
on-disk cache (``dynsim/__init__.py`` keys that cache on dynsim's source). A cold cache costs a
first run seconds to tens of seconds; every later run loads the kernels in well under a second.

* ``compile_notice``: while it is active, the first time Numba starts compiling (a kernel missing
  from the cache), one line goes to stderr naming the kind of run and the expected compile time.
  Numba's ``numba:compile`` event starts only on a cache miss, so a warm run prints nothing.
* ``precompile``: compiles every kernel a kind of experiment can use, by running the few tiny
  configs of its ``compile_plan`` that between them take every kernel path (trainers, precisions,
  observables), into a temporary folder. ``dynsim compile`` calls it so that a user, a cluster image or a Dask worker pays the
  compile once after installing.
"""
import contextlib
import sys
import tempfile
import threading
import time
from pathlib import Path

from numba.core import event

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
def compile_notice(kind, enabled: bool = True, stream=None):
    """Within the block, say once on ``stream`` (stderr) that kernels are being compiled, if any are.

    ``kind``: the kind of experiment (``dynsim.experiment.ExperimentKind``) whose kernels the block
    may compile; its ``compile_seconds`` is the estimate the line gives.
    """
    if not enabled:
        yield None
        return
    seconds = kind.compile_seconds
    what = f"this kind of run ({kind.name})"
    listener = _FirstCompile(f"dynsim: compiling kernels for {what}, once: about {seconds} s on a 2-core machine "
                             "(later runs load them from the cache)", stream or sys.stderr)
    event.register("numba:compile", listener)
    try:
        yield listener
    finally:
        event.unregister("numba:compile", listener)


def precompile(kinds, progress: bool = True) -> dict[str, float]:
    """Compile every kernel of each kind in ``kinds`` (``ExperimentKind`` objects; or load them from
    the cache) by running the tiny configs of its ``compile_plan``; seconds per kind name."""
    from tqdm import tqdm

    seconds = {}
    configs = [(kind, mapping) for kind in kinds for mapping in kind.compile_plan()]
    bar = tqdm(total=len(configs), unit="config", desc="dynsim compile", disable=not progress, leave=False)
    with tempfile.TemporaryDirectory(prefix="dynsim-compile-") as folder:
        for i, (kind, mapping) in enumerate(configs):
            bar.set_postfix_str(kind.name)
            start = time.perf_counter()
            kind.run(kind.config_from_mapping(mapping), Path(folder) / f"{i}.h5", overwrite=True, progress=False)
            seconds[kind.name] = seconds.get(kind.name, 0.0) + time.perf_counter() - start
            bar.update(1)
    bar.close()
    return seconds
