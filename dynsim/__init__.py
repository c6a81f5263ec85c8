"""dynsim: training of small neural networks as a stochastic dynamical system."""
import hashlib
import os
from pathlib import Path

__version__ = "0.1.0"


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
        if b"@njit" in source or b"cuda.jit" in source or b"@replica_kernel" in source:
            digest.update(path.relative_to(package).as_posix().encode())
            digest.update(source)
    base = os.environ.get("NUMBA_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "dynsim")
    numba.config.CACHE_DIR = os.path.join(base, f"numba-{__version__}-{digest.hexdigest()[:16]}")


_source_keyed_numba_cache()
