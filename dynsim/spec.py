"""Declarative validation for the frozen dataclasses that make up a run's configuration.

Each section (``[run]``, ``[model]``, ...) is a frozen dataclass whose fields are declared with
``option(...)``: type, default, allowed values or range, and a one-line description. One generic
validator checks every field of every section, so that field lists are written once and every bad
value produces the same kind of message: the field, the value, and what is allowed.
"""
import dataclasses
import math
from typing import Any


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type, or out of range.

    ``field`` is the dotted name of the offending key (``training.eta``), so callers and tests can
    tell which value was wrong without parsing the message.
    """

    def __init__(self, field: str, message: str):
        self.field = field
        self.detail = message  # the message without the field prefix (for callers that add context)
        super().__init__(f"config field '{field}': {message}")


class ConfigFileError(ConfigError):
    """The config file itself cannot be used (missing, a directory, unreadable, not valid TOML);
    ``field`` is the file's name."""

    def __init__(self, source: str, message: str):
        super().__init__(source, message)
        self.args = (f"config file '{source}': {message}",)

    def __str__(self):
        return self.args[0]


_KINDS = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
          "str_list": "a list of strings", "int_list": "a list of integers",
          "all_or_count": "true (all), false (none) or a whole number"}


def option(default, kind: str, doc: str, *, choices=None, minimum=None, maximum=None,
           exclusive_minimum: bool = False, optional: bool = False):
    """Declare a config field. ``optional`` allows None (meaning: derived from other fields)."""
    if kind not in _KINDS:
        raise TypeError(f"unknown option kind {kind!r}")
    meta = dict(kind=kind, doc=doc, choices=choices, minimum=minimum, maximum=maximum,
                exclusive_minimum=exclusive_minimum, optional=optional)
    if isinstance(default, (list, tuple)):
        default_tuple = tuple(default)
        return dataclasses.field(default_factory=lambda: default_tuple, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def _describe_allowed(meta) -> str:
    if meta["choices"] is not None:
        prefix = "must be a list of strings, each one of: " if meta["kind"] == "str_list" else "allowed: "
        return prefix + ", ".join(repr(c) for c in meta["choices"])
    parts = [_KINDS[meta["kind"]]]
    if meta["minimum"] is not None:
        parts.append(("> " if meta["exclusive_minimum"] else ">= ") + repr(meta["minimum"]))
    if meta["maximum"] is not None:
        parts.append("<= " + repr(meta["maximum"]))
    return "must be " + " ".join(parts)


def _coerce(value: Any, meta, field: str):
    """Return ``value`` converted to the declared kind, or raise ConfigError."""
    kind = meta["kind"]
    if value is None:
        if meta["optional"]:
            return None
        raise ConfigError(field, f"got None; {_describe_allowed(meta)}")
    if kind == "int":
        ok = isinstance(value, int) and not isinstance(value, bool)
        if not ok and isinstance(value, float) and value.is_integer():
            value, ok = int(value), True
    elif kind == "float":
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
        if ok and not math.isfinite(value):  # inf would diverge at the first step, nan compares with nothing
            raise ConfigError(field, f"got {value!r}; {_describe_allowed(meta)} and finite")
    elif kind == "str":
        ok = isinstance(value, str)
    elif kind == "bool":
        ok = isinstance(value, bool)
    elif kind == "all_or_count":
        ok = isinstance(value, bool) or (isinstance(value, int) and value >= 0)
    elif kind == "int_list":
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        value = tuple(value) if ok else value
    else:  # str_list
        ok = isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)
        value = tuple(value) if ok else value
    if not ok:
        raise ConfigError(field, f"got {value!r} ({type(value).__name__}); {_describe_allowed(meta)}")
    if kind in ("str_list", "int_list"):
        if not value:
            raise ConfigError(field, "got an empty list, which would select nothing; list at least one value, or "
                                     "remove the key for the default")
        repeated = sorted({v for v in value if value.count(v) > 1}, key=str)
        if kind == "str_list" and repeated:
            raise ConfigError(field, f"lists {', '.join(map(repr, repeated))} more than once; list each value once")
    if meta["choices"] is not None:
        items = value if kind == "str_list" else (value,)
        for item in items:
            if item not in meta["choices"]:
                raise ConfigError(field, f"got {item!r}; {_describe_allowed(meta)}")
    low, high = meta["minimum"], meta["maximum"]
    if isinstance(value, bool):  # true/false of an all_or_count: no range to check
        return value
    if low is not None and (value < low or (meta["exclusive_minimum"] and value == low)):
        raise ConfigError(field, f"got {value!r}; {_describe_allowed(meta)}")
    if high is not None and value > high:
        raise ConfigError(field, f"got {value!r}; {_describe_allowed(meta)}")
    return value


class Section:
    """Base of the validated config sections: subclasses are ``@dataclass(frozen=True)``.

    ``SECTION`` is the TOML table name; ``check()`` holds the cross-field rules of one section.
    """

    SECTION = ""

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = _coerce(getattr(self, f.name), f.metadata, f"{self.SECTION}.{f.name}")
            object.__setattr__(self, f.name, value)
        self.check()

    def check(self):
        """Cross-field rules; raise ConfigError naming a field."""

    def fail(self, name: str, message: str):
        raise ConfigError(f"{self.SECTION}.{name}", message)

    @classmethod
    def from_mapping(cls, mapping, section: str | None = None):
        section = section or cls.SECTION
        if not isinstance(mapping, dict):
            raise ConfigError(section, f"expected a table [{section}], got {type(mapping).__name__}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in mapping:
            if key not in names:
                raise ConfigError(f"{section}.{key}",
                                  f"unknown key; allowed keys in [{section}]: {', '.join(names)}")
        return cls(**mapping)

    def to_mapping(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def describe(cls) -> list[tuple[str, str, str]]:
        """(key, allowed, doc) for every field: used by the README generator and error messages."""
        return [(f.name, _describe_allowed(f.metadata), f.metadata["doc"]) for f in dataclasses.fields(cls)]
