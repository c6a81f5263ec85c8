"""The shipped MNIST-1D data set (dynsim/datasets/mnist1d.h5) and the ``mnist1d`` classification task.

Independent references: the sizes and the standardisation are those of the mnist1d package's
defaults (5,000 samples, train split 0.8, length 40, data standardised to mean 0 and std 1 over the
whole set before the split); the class counts are those of a class-balanced draw (500 per class)
split 4,000 / 1,000 at random; the stored sha256 is recomputed from the arrays.
"""
import hashlib
import json
from importlib import resources

import h5py
import numpy as np
import pytest

from dynsim.config import dump_toml
from dynsim.kinds import make_runner, parse_config
from dynsim.spec import ConfigError
from dynsim.store import RunReader
from dynsim.datasets import load_mnist1d
from dynsim.tasks.classification import ClassificationTask, make_classification_data

SEED = 20261207


def _file():
    return resources.as_file(resources.files("dynsim.datasets") / "mnist1d.h5")


def test_file_shapes_dtypes_provenance_and_digest():
    with _file() as path, h5py.File(path, "r") as f:
        arrays = {name: f[name][()] for name in ("x_train", "y_train", "x_test", "y_test")}
        attrs = dict(f.attrs)
    assert arrays["x_train"].shape == (4000, 40) and arrays["x_test"].shape == (1000, 40)
    assert arrays["y_train"].shape == (4000,) and arrays["y_test"].shape == (1000,)
    assert arrays["x_train"].dtype == np.float32 and arrays["y_train"].dtype == np.uint8
    h = hashlib.sha256()
    for name in ("x_train", "y_train", "x_test", "y_test"):
        h.update(np.ascontiguousarray(arrays[name]).tobytes())
    assert attrs["sha256"] == h.hexdigest()
    assert attrs["source"] == "https://github.com/greydanus/mnist1d" and attrs["licence"] == "Apache-2.0"
    assert "Greydanus" in attrs["creators"] and "Kobak" in attrs["creators"]
    assert attrs["package_version"] == "0.0.2.post1"
    args = json.loads(attrs["args"])
    assert (args["num_samples"], args["train_split"], args["final_seq_length"], args["seed"]) == (5000, 0.8, 40, 42)
    # Standardised over all 5,000 signals (float32 storage: agreement to ~1e-6).
    everything = np.concatenate([arrays["x_train"], arrays["x_test"]]).astype(np.float64)
    assert abs(everything.mean()) < 1e-5 and abs(everything.std() - 1.0) < 1e-5


def test_class_balance_of_the_split():
    """500 signals per class split at random 4,000 / 1,000: each class has 100 +- sqrt(500 * 0.8 * 0.2)
    = 100 +- 8.9 test signals (hypergeometric); all ten within 100 +- 4 std (+- 36) and summing to 500."""
    _, y_train, _, y_test = load_mnist1d()
    train, test = np.bincount(y_train, minlength=10), np.bincount(y_test, minlength=10)
    np.testing.assert_array_equal(train + test, np.full(10, 500))
    assert np.all(np.abs(test - 100) <= 36)


def test_task_draws_subsets_of_each_split_with_label_noise():
    x_train, y_train, x_test, y_test = load_mnist1d()
    task = ClassificationTask(kind="mnist1d", n_train=300, n_test=200, label_noise=0.25)
    assert task.n_classes == 10
    data = make_classification_data(task, SEED)
    assert data.x_train.shape == (300, 40) and data.x_test.shape == (200, 40)
    # Every drawn training (test) signal is a distinct row of the training (test) split, with its label.
    for x, labels, pool_x, pool_y in ((data.x_train, data.clean_train, x_train, y_train),
                                      (data.x_test, data.y_test, x_test, y_test)):
        rows = [int(np.flatnonzero(np.all(pool_x == sample, axis=1))[0]) for sample in x]
        assert len(set(rows)) == len(rows)
        np.testing.assert_array_equal(labels, pool_y[rows])
    # Exactly round(0.25 * 300) = 75 training labels moved to another class; the test labels are clean.
    assert np.count_nonzero(data.y_train != data.clean_train) == 75 == data.noisy_index.size
    again = make_classification_data(task, SEED)
    np.testing.assert_array_equal(again.x_train, data.x_train)
    assert not np.array_equal(make_classification_data(task, SEED + 1).x_train, data.x_train)


@pytest.mark.parametrize("overrides, field", [(dict(n_train=4001), "task.n_train"), (dict(n_test=1001), "task.n_test"),
                                              (dict(classes=4), "task.classes")])
def test_task_rejects_sizes_beyond_the_splits(overrides, field):
    with pytest.raises(ConfigError) as info:
        ClassificationTask(kind="mnist1d", **overrides)
    assert info.value.field == field


def test_a_small_mlp_learns_mnist1d_well_above_chance(tmp_path):
    """Two hidden relu layers of 64 on 1,000 clean signals, 3,000 SGD steps (eta 0.05, batch 32), one
    replica: test accuracy well above chance (0.1). Expected before the run: > 0.3 (an MLP on the full
    4,000 signals reaches ~0.6-0.7 in the MNIST-1D paper; a quarter of the data and a short run less)."""
    tables = dict(run=dict(seed=3, replicas=1, steps=3000),
                  model=dict(kind="mlp", depth=2, width=64, activation="relu"),
                  task=dict(kind="mnist1d", n_train=1000, n_test=1000),
                  training=dict(method="sgd", eta=0.05, batch_size=32),
                  record=dict(n_records=3, observables=["accuracy_train", "accuracy_test"]))
    path = tmp_path / "m.h5"
    result = make_runner(parse_config(dump_toml(tables))).run(path, progress=False)
    assert result.ok, result.message
    with RunReader(path) as reader:
        train, test = reader.observable("accuracy_train")[-1, 0], reader.observable("accuracy_test")[-1, 0]
    print(train, test)
    assert test > 0.3 and train > test
