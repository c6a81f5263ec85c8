"""Files written before the kind registry (dynsim at commit f7d01c0, format_version 1, no root
attribute ``kind``) stay readable, and the same config run now reproduces them bit for bit.

``tests/data/format1_*.h5`` were written by that commit from the ``tests/data/*.toml`` next to them
(a simple-network run, a deep-MLP run and a max-norm chain file).
"""
from pathlib import Path

import numpy as np
import pytest

from dynsim import kinds
from dynsim.config import _move_keys, parse_toml, results_digest
from dynsim.store import ChainReader, RunReader, file_kind

from conftest import run_cli

DATA = Path(__file__).resolve().parent / "data"
CASES = [("simple", RunReader), ("mlp", RunReader), ("maxnorm_chain", ChainReader)]
_STEM = {"simple": "simple", "mlp": "mlp", "maxnorm_chain": "chain"}


@pytest.mark.parametrize("kind, reader_class", CASES)
def test_old_file_is_read_as_its_kind(kind, reader_class):
    path = DATA / f"format1_{_STEM[kind]}.h5"
    with reader_class(path) as reader:
        assert "kind" not in reader.attrs  # written before the attribute existed
        config = kinds.stored_config(reader)
        stored_digest = reader.file["config"].attrs["sha256"]
        stored_tables = parse_toml(reader.config_text)
    assert file_kind(path) == kind and kinds.kind_of_file(path).name == kind
    assert type(config).KIND == kind
    # the stored config parses back to its own text, and defines the same run as the TOML file does
    # today: only defaults of how files are stored (STORAGE_KEYS: the checkpoint cadence, 2026-12-04)
    # may differ, which ``resume --config`` and sweeps ignore for exactly this reason
    today = kinds.load_config(DATA / f"{_STEM[kind]}.toml")
    moved = getattr(type(config), "MOVED_KEYS", {})
    if any(key in stored_tables.get(table, {}) for table, key in moved):
        # the MLP's file gives its input dimension in [task] (2026-12-03), which has moved to [model]:
        # it parses back to its own tables with that key in its new place, and nothing else changed
        assert kind == "mlp" and config.model.input_dim == stored_tables["task"]["input_dim"]
        assert parse_toml(config.to_toml()) == _move_keys(stored_tables, moved)
    else:
        assert config.digest() == stored_digest
    assert results_digest(config) == results_digest(today)
    info = run_cli("info", path, check=True).stdout
    assert f"{kind}" in info and "status      completed" in info


@pytest.mark.parametrize("kind, reader_class", CASES)
def test_old_file_is_reproduced_bit_for_bit(kind, reader_class, tmp_path):
    old = DATA / f"format1_{_STEM[kind]}.h5"
    new = tmp_path / "new.h5"
    assert kinds.run(kinds.load_config(DATA / f"{_STEM[kind]}.toml"), new, progress=False).code == "completed"
    with reader_class(old) as a, reader_class(new) as b:
        if reader_class is RunReader:
            assert a.observable_names == b.observable_names
            for name in a.observable_names:
                assert np.array_equal(a.observable(name), b.observable(name), equal_nan=True), name
            assert np.array_equal(a.dataset("params/final"), b.dataset("params/final"))
        else:
            # every measure of the old file, bit for bit; measures added since (the squared distance,
            # 2026-12-04) are new datasets beside them
            assert set(a.measure_names) <= set(b.measure_names)
            for name in a.measure_names:
                assert np.array_equal(a.measure(name), b.measure(name), equal_nan=True), name
            assert np.array_equal(a.train_log_gain(), b.train_log_gain())
