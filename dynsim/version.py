"""dynsim's version, in a module of its own so that any module can import it without importing the
package's ``__init__`` (which may import other modules lazily, e.g. ``dynsim.open_run``)."""
__version__ = "0.1.0"
