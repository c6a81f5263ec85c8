"""dynsim: training of small neural networks as a stochastic dynamical system."""
import hashlib
import os
import re
from pathlib import Path

from .version import __version__


#: code that compiles kernels or sets how they compile: a decorator line, or a call of njit / cuda.jit
#: (this module's own mention of them is neither)
_DEFINES_KERNELS = re.compile(rb"^[ \t]*@(njit|replica_kernel|cuda\.jit|intrinsic)\b|\b(njit|cuda\.jit)\(", re.MULTILINE)


def _source_keyed_numba_cache() -> None:
    """Point Numba's on-disk cache at a folder keyed by a hash of dynsim's source.

    Numba checks a cached kernel only against the file that defines it, not against the
    functions inlined into it from other files: after an edit (or an upgrade) of, say, the model
    module, the engine's cached kernel would silently keep the old model. Keying the whole cache
    on every source file of the package makes any change start a fresh cache. A user's own
    NUMBA_CACHE_DIR is respected (the key becomes a sub-folder of it). Only files that define
    compiled kernels enter the key, so that editing, say, the CLI keeps the cache.
    """
    import numba

    package = Path(__file__).resolve().parent
    digest = hashlib.sha256()
    for path in sorted(package.rglob("*.py")):
        source = path.read_bytes()
        if _DEFINES_KERNELS.search(source):
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(source)
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "dynsim")
    numba.config.CACHE_DIR = os.path.join(base, f"numba-{__version__}-{digest.hexdigest()[:16]}")


_source_keyed_numba_cache()


def __getattr__(name):
    # ``dynsim.open_run`` without importing xarray (and pandas) at ``import dynsim``: only on first use
    if name == "open_run":
        from .reading import open_run

        return open_run
    if name == "measure":  # and dynsim.measure(run, observables=..., probes=...): measured afterwards
        from .trajectory import measure

        return measure
    raise AttributeError(f"module 'dynsim' has no attribute {name!r}")
