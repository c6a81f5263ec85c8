"""The contract of a kind of experiment: what ``dynsim.kinds`` needs from one.

A *kind* (``[model] kind`` of a config: ``simple``, ``mlp``, ``maxnorm_chain``, ...) lives in one
module that defines its config tables, its runner and a ``KIND`` object satisfying
``ExperimentKind``. Every boundary that has to know "which kind is this?" (loading a TOML,
``dynsim run``, ``resume``, ``info``, ``config-keys``, ``compile``, ``sweep``, ``analysis report``)
asks the registry in ``dynsim.kinds`` for the kind, then calls these methods; no other code
branches on the kind. See ``docs/architecture.md`` for a worked example.

Time-stepped kinds (trained by the shared time loop, ``dynsim.engine.TimeLoop``) subclass
``TimeSteppedKind`` and provide only their config and runner; block-wise kinds (the chain) run
their own loop behind the same ``run`` / ``resume`` entry points.

This module sits above the engine and the store and below the kinds: it imports neither a kind
nor the registry.
"""
import dataclasses
from collections.abc import Mapping
from typing import Protocol, runtime_checkable

from .config import config_from_tables, parse_toml
from .engine import get_backend, resume_time_loop
from .spec import ConfigError
from .store import RunReader


@runtime_checkable
class ExperimentKind(Protocol):
    """What a kind provides. Configs of a kind carry ``KIND = name`` and ``to_toml() / digest()``."""

    #: the value of ``[model] kind`` that selects it
    name: str
    #: one line: what the kind is (``dynsim config-keys``, the error for an unknown kind)
    description: str
    #: its config tables: table name -> ``dynsim.spec.Section`` subclass (``dynsim config-keys``)
    sections: Mapping[str, type]
    #: names of ``analysis.report`` sections for one file of this kind, and for a merged sweep of them
    report_sections: tuple[str, ...]
    sweep_report_sections: tuple[str, ...]
    #: cold-cache compile time of its kernels on a 2-core machine, for the compile notice (s)
    compile_seconds: float

    def config_from_mapping(self, tables: dict):
        """A validated config from TOML tables; ``ConfigError`` naming the field otherwise."""

    def compile_plan(self) -> list[dict]:
        """Tables of tiny configs whose runs compile every kernel the kind can use (``dynsim compile``)."""

    def with_backend(self, config, backend: str):
        """``config`` with ``run.backend`` replaced (``dynsim run --backend``); ``ConfigError`` if unsupported."""

    def run(self, config, path, *, overwrite: bool = False, progress=None):
        """Run ``config`` into ``path``; a result with ``code`` ('completed', ...) and ``message``."""

    def resume(self, path, *, progress=None, expect_config=None):
        """Continue an interrupted file of this kind to its configured end."""

    def status(self, path, group: str | None = None) -> str:
        """The status code stored in a file of this kind ('completed', 'running', 'interrupted', ...)."""

    def config_text(self, path, group: str | None = None) -> str:
        """The resolved config stored in a file of this kind, as TOML text."""

    def summary(self, path, group: str | None = None) -> str:
        """``dynsim info``: a few lines describing a file of this kind."""


class TimeSteppedKind:
    """Base of the kinds trained by the shared time loop: a subclass sets the class attributes of
    ``ExperimentKind`` and provides ``config_from_mapping`` and ``runner(config)`` (a
    ``dynsim.engine.TimeLoop``); files are run files (``dynsim.store.RunWriter``)."""

    name = description = ""
    sections: Mapping[str, type] = {}
    config_class: type = None  # the frozen config dataclass built from ``sections``
    report_sections: tuple[str, ...] = ()
    sweep_report_sections: tuple[str, ...] = ()
    compile_seconds = 0.0
    backends: tuple[str, ...] = ("cpu",)

    def config_from_mapping(self, tables: dict):
        return config_from_tables(tables, self.sections, self.config_class, self.name)

    def runner(self, config):
        """The kind's ``dynsim.engine.TimeLoop`` for ``config``: every time-stepped kind provides it."""
        raise NotImplementedError(f"the kind {self.name!r} provides no runner")

    def compile_plan(self) -> list[dict]:
        return []

    def with_backend(self, config, backend: str):
        if backend not in self.backends:
            raise ConfigError("run.backend", f"got {backend!r}; a {self.name} run has the backends "
                                             f"{', '.join(map(repr, self.backends))}")
        get_backend(backend)  # a clear error now if, say, CUDA is unavailable
        return dataclasses.replace(config, run=dataclasses.replace(config.run, backend=backend))

    def parse_config(self, text: str, source: str):
        return self.config_from_mapping(parse_toml(text, source))

    def run(self, config, path, *, overwrite=False, progress=None):
        return self.runner(config).run(path, overwrite=overwrite, progress=progress)

    def resume(self, path, *, progress=None, expect_config=None):
        return resume_time_loop(path, parse_config=self.parse_config, make_runner=self.runner, progress=progress,
                                expect_config=expect_config)

    def status(self, path, group=None) -> str:
        with RunReader(path, group) as reader:
            return reader.status["code"]

    def config_text(self, path, group=None) -> str:
        with RunReader(path, group) as reader:
            return reader.config_text

    def summary(self, path, group=None) -> str:
        with RunReader(path, group) as reader:
            return reader.summary()
