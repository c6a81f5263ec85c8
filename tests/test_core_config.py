"""Config validation: every bad input names its field; good configs round-trip through TOML."""
import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dynsim.config import Config, RunSpec
from dynsim.kinds import parse_config
from dynsim.integrators import TrainerSpec
from dynsim.models.simple import SimpleNet
from dynsim.spec import ConfigError
from dynsim.tasks import TaskSpec

# (TOML text, the field the error must name, a fragment the message must contain)
BAD_CONFIGS = [
    ("[run]\nreplicas = 0", "run.replicas", ">= 1"),
    ("[run]\nreplicas = 2.5", "run.replicas", "an integer"),
    ("[run]\nsteps = -3", "run.steps", ">= 1"),
    ("[run]\nseed = \"one\"", "run.seed", "an integer"),
    ("[run]\nbackend = \"tpu\"", "run.backend", "'cpu', 'cuda'"),
    ("[run]\non_divergence = \"ignore\"", "run.on_divergence", "'stop', 'freeze'"),
    ("[run]\nreplica = 4", "run.replica", "unknown key"),
    ("[model]\nactivation = \"gelu\"", "model.activation", "'relu'"),
    ("[model]\nwidth = 0", "model.width", ">= 1"),
    ("[model]\nscaling = \"mup\"", "model.scaling", "'ntk'"),
    ("[model]\nweight_std = -1.0", "model.weight_std", ">= 0.0"),
    ("[model]\noutput_bias = 1", "model.output_bias", "true or false"),
    ("[task]\nkind = \"mnist\"", "task.kind", "'encoding'"),
    ("[task]\nn_train = 4\nn_sources = 5", "task.n_sources", "<= task.n_train"),
    ("[task]\nkind = \"random_labels\"\nlabels = \"01\"", "task.labels", "+1/-1"),
    ("[task]\nboundary = 1.5", "task.boundary", "<= 1.0"),
    ("[training]\neta = 0", "training.eta", "> 0.0"),
    ("[training]\neta = nan", "training.eta", "nan"),
    ("[training]\nmethod = \"adam\"", "training.method", "'sgd'"),
    ("[training]\nmethod = \"gd\"\nbatch_size = 4", "training.batch_size", "whole training set"),
    ("[training]\nbatch_size = 64\n[task]\nn_train = 32", "training.batch_size", "<= task.n_train"),
    ("[training]\nmethod = \"langevin\"", "training.temperature", "temperature > 0"),
    ("[training]\ntemperature = 0.1", "training.temperature", "only method = 'langevin'"),
    ("[training]\nloss = \"cross_entropy\"\n[task]\nkind = \"teacher\"", "training.loss", "+1/-1 labels"),
    ("[training]\nsampling = \"stratified\"", "training.sampling", "'without_replacement'"),
    ("[record]\nn_records = 1", "record.n_records", ">= 2"),
    ("[record]\nspacing = \"geometric\"", "record.spacing", "'log'"),
    ("[record]\nobservables = [\"loss\"]", "record.observables", "'loss_train'"),
    ("[record]\nobservables = \"ntk\"", "record.observables", "a list of strings"),
    ("[record]\nobservables = [\"accuracy_train\"]\n[task]\nkind = \"teacher\"", "record.observables",
     "classification task"),
    ("[record]\ncompression = \"zstd\"", "record.compression", "'gzip'"),
    ("[record]\nobservables = [\"loss_train\", \"ntk\", \"loss_train\"]", "record.observables", "more than once"),
    ("[record]\nobservables = []", "record.observables", "empty list"),
    ("[training]\neta = inf", "training.eta", "finite"),
    ("[model]\nbias_std = inf", "model.bias_std", "finite"),
    ("[task]\nn_test = 0\n[record]\nobservables = [\"loss_test\"]", "record.observables", "no test set"),
    ("seed = 1", "seed", "[run] seed = ..."),
    ("[optimizer]\nlr = 1", "optimizer", "unknown table"),
    ("[run\nseed = 1", "<string>", "not valid TOML"),
    ("run = 3", "run", "expected a table"),
]


@pytest.mark.parametrize("text,field,fragment", BAD_CONFIGS, ids=[c[1] + ":" + c[2][:12] for c in BAD_CONFIGS])
def test_bad_config_names_field_and_fix(text, field, fragment):
    with pytest.raises(ConfigError) as info:
        parse_config(text)
    assert info.value.field == field
    assert field in str(info.value) and fragment in str(info.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    from dynsim.kinds import load_config

    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "absent.toml")


def test_empty_config_is_all_defaults_and_resolves():
    cfg = parse_config("")
    assert cfg == Config()
    resolved = cfg.resolved()
    assert resolved.task.seed == cfg.run.seed and resolved.training.batch_size == 1
    assert parse_config(resolved.to_toml()) == resolved


def test_direct_construction_is_validated_too():
    with pytest.raises(ConfigError, match="model.width"):
        SimpleNet(width=-1)
    with pytest.raises(ConfigError, match="training.eta"):
        dataclasses.replace(TrainerSpec(), eta=-0.1)


_methods = st.sampled_from(["gd", "sgd", "langevin"])


@st.composite
def _configs(draw):
    n_train = draw(st.integers(1, 500))
    method = draw(_methods)
    training = TrainerSpec(method=method, eta=draw(st.floats(1e-6, 10.0)),
                           batch_size=None if method == "gd" else draw(st.integers(1, n_train)),
                           temperature=draw(st.floats(1e-6, 5.0)) if method == "langevin" else 0.0,
                           weight_decay=draw(st.floats(0.0, 1.0)))
    return Config(run=RunSpec(seed=draw(st.integers(0, 2**64 - 1)), replicas=draw(st.integers(1, 10**6)),
                              steps=draw(st.integers(1, 10**9))),
                  model=SimpleNet(input_dim=draw(st.integers(1, 64)), width=draw(st.integers(1, 4096)),
                                  activation=draw(st.sampled_from(["linear", "relu", "tanh", "sigmoid", "erf",
                                                                   "softplus"])),
                                  scaling=draw(st.sampled_from(["standard", "ntk"])),
                                  bias_std=draw(st.floats(0.0, 3.0))),
                  task=TaskSpec(kind=draw(st.sampled_from(["encoding", "teacher", "random_labels"])),
                                n_train=n_train, n_sources=draw(st.integers(1, n_train))),
                  training=training)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(_configs())
def test_random_valid_configs_round_trip_through_toml(cfg):
    assert parse_config(cfg.to_toml()) == cfg
    assert parse_config(cfg.resolved().to_toml()) == cfg.resolved()
    assert cfg.digest() == parse_config(cfg.to_toml()).digest()


@settings(max_examples=80, deadline=None, derandomize=True)
@given(st.dictionaries(st.sampled_from(["run", "model", "task", "training", "record", "extra"]),
                       st.dictionaries(st.text(min_size=1, max_size=12),
                                       st.one_of(st.integers(), st.floats(allow_nan=True), st.text(max_size=5),
                                                 st.booleans(), st.lists(st.integers(), max_size=2)),
                                       max_size=3), max_size=3))
def test_random_malformed_configs_raise_only_config_errors(data):
    from dynsim.kinds import config_from_mapping

    try:
        config_from_mapping(data)
    except ConfigError:
        pass
