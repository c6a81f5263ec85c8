"""The registry of kinds of experiment, keyed by ``[model] kind``: the one place that decides.

Every boundary that must know which kind a config or a file is (loading a TOML, ``dynsim run``,
``resume``, ``info``, ``config-keys``, ``compile``, ``sweep``, ``analysis report``) calls a function
of this module, which looks the kind up here and hands over to its ``KIND`` object (the contract
is ``dynsim.experiment.ExperimentKind``). A config without ``[model] kind`` is ``simple``; a file
says its kind in its root attribute ``kind`` (``dynsim.store.file_kind``). An unknown kind is a
``ConfigError`` that lists the registered ones.

The built-in kinds are imported here (and only here); ``register`` adds another one, for example
a kind defined in a user's own module or in a test.
"""
from . import chain_experiment, deep_experiment, response_law_experiment, simple_experiment
from .config import parse_toml, read_toml_file
from .spec import ConfigError
from .store import file_kind

DEFAULT_KIND = "simple"

_KINDS = {kind.name: kind for kind in (simple_experiment.KIND, deep_experiment.KIND, chain_experiment.KIND,
                                       response_law_experiment.KIND)}


def register(kind, *, replace: bool = False):
    """Add a kind (an ``ExperimentKind``) under ``kind.name``; returns it (usable as a decorator)."""
    if not isinstance(getattr(kind, "name", None), str) or not kind.name:
        raise ValueError("a kind needs a non-empty string attribute 'name' (its [model] kind)")
    if kind.name in _KINDS and not replace and _KINDS[kind.name] is not kind:
        raise ValueError(f"a kind named {kind.name!r} is registered already")
    _KINDS[kind.name] = kind
    return kind


def unregister(name: str) -> None:
    _KINDS.pop(name, None)


def registered() -> dict:
    """{name: kind} of every registered kind, built-in ones first."""
    return dict(_KINDS)


def get(name: str):
    """The kind registered as ``name``; ``ConfigError`` on ``model.kind`` listing every kind otherwise."""
    try:
        return _KINDS[name]
    except (KeyError, TypeError):
        raise ConfigError("model.kind", f"got {name!r}; registered kinds: "
                                        f"{', '.join(repr(k) for k in _KINDS)}") from None


def kind_of_tables(tables):
    """The kind selected by a config's tables (``[model] kind``, default 'simple')."""
    model = tables.get("model") if isinstance(tables, dict) else None
    name = model.get("kind", DEFAULT_KIND) if isinstance(model, dict) else DEFAULT_KIND
    return get(name)


def kind_of(config):
    """The kind of a config object (its class attribute ``KIND``)."""
    return get(type(config).KIND)


def kind_of_file(path, group: str | None = None):
    """The kind that wrote a run or chain file (or a point ``group`` of a merged sweep file)."""
    return get(file_kind(path, group))


# -- configs ----------------------------------------------------------------------------------
def config_from_mapping(tables: dict):
    """A validated config of the kind ``tables`` select."""
    return kind_of_tables(tables).config_from_mapping(tables)


def parse_config(text: str, source: str = "<string>"):
    return config_from_mapping(parse_toml(text, source))


def load_config(path):
    """A config file as the config of its kind; ``ConfigError`` naming the file or field otherwise."""
    return config_from_mapping(read_toml_file(path))


def stored_config(reader):
    """The config stored in an open run or chain file (``RunReader`` / ``ChainReader``), as its kind's."""
    text = reader.config_text
    tables = parse_toml(text, f"{reader.path}:/config")
    return kind_of_tables(tables).config_from_mapping(tables)


# -- running ----------------------------------------------------------------------------------
def make_runner(config):
    """The time-loop runner of a config of a time-stepped kind (``Simulation``, ``DeepSimulation``, ...)."""
    kind = kind_of(config)
    if not hasattr(kind, "runner"):
        raise ConfigError("model.kind", f"{kind.name!r} is not trained by the time loop; use dynsim.kinds.run")
    return kind.runner(config)


def run(config, path, *, overwrite: bool = False, progress=None):
    """Run ``config`` into ``path`` with its kind; the kind's result (``code``, ``message``)."""
    return kind_of(config).run(config, path, overwrite=overwrite, progress=progress)


def resume(path, *, progress=None, expect_config=None):
    """Continue an interrupted file to its configured end, with the kind that wrote it."""
    return kind_of_file(path).resume(path, progress=progress, expect_config=expect_config)


def summary(path, group: str | None = None) -> str:
    return kind_of_file(path, group).summary(path, group)


def config_text(path, group: str | None = None) -> str:
    return kind_of_file(path, group).config_text(path, group)


def ensure_run(config, path, *, progress=None, keep_diverged: bool = False):
    """A completed file at ``path`` for ``config`` (a config object or a config file's path): kept when
    it is complete already, resumed when it was interrupted, run when it is missing; ``ConfigError``
    naming the file when a kept or resumed file holds another config. Returns ``path``.

    ``keep_diverged``: a run that ended diverged (with ``run.on_divergence = "freeze"``, the replicas
    that stayed finite ran to the end) is a result as it is: kept, and returned when a new run ends so,
    instead of refused (resuming it would diverge again)."""
    from pathlib import Path

    from .config import results_digest

    config = load_config(config) if isinstance(config, (str, Path)) else config
    path = Path(path)
    if path.exists():
        kind = kind_of_file(path)
        # through the contract every kind has (config_text, config_from_mapping): the block-wise kinds
        # have no parse_config of their own
        kept = kind.config_from_mapping(parse_toml(kind.config_text(path), f"{path}:/config"))
        if results_digest(kept) != results_digest(config):
            raise ConfigError(str(path), "holds a run of another config: remove it, or write elsewhere")
        accepted = ("completed", "diverged") if keep_diverged else ("completed",)
        if kind.status(path) in accepted:
            return path
        result = kind.resume(path, progress=progress)
    else:
        result = run(config, path, progress=progress)
    if result.code != "completed" and not (keep_diverged and result.code == "diverged"):
        raise ConfigError(str(path), result.message)
    return path
