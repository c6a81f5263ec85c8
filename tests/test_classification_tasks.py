"""K-class classification tasks: every label recomputed independently with NumPy from the inputs (or
from the shipped digits), the splits, label noise, determinism and the validation of every field.

No Numba compilation here: the data are built on the host, so the whole file runs in about a second.
"""
import numpy as np
import pytest

from dynsim import kinds
from dynsim.datasets import load_digits
from dynsim.spec import ConfigError
from dynsim.tasks.classification import (CLASSIFICATION_KINDS, ClassificationTask, classification_teacher,
                                         make_classification_data)

SEED = 20261125

# Small sizes keep every kind cheap; modular_addition ignores n_train / n_test.
SMALL = dict(gaussian_mixture=dict(n_train=64, n_test=32), teacher=dict(n_train=64, n_test=32),
             parity=dict(n_train=64, n_test=32), modular_addition=dict(modulus=7),
             digits=dict(n_train=100, n_test=50), mnist1d=dict(n_train=100, n_test=50))


def small_task(kind: str, **overrides) -> ClassificationTask:
    return ClassificationTask(kind=kind, **{**SMALL[kind], **overrides})


@pytest.mark.parametrize("kind", CLASSIFICATION_KINDS)
def test_shapes_dtypes_and_label_range(kind):
    task = small_task(kind)
    data = make_classification_data(task, SEED)
    d, k = task.input_dimension(), task.n_classes
    assert data.x_train.shape == (task.train_size, d) and data.x_test.shape == (task.test_size, d)
    assert data.y_train.shape == (task.train_size,) and data.y_test.shape == (task.test_size,)
    for array in (data.x_train, data.y_train, data.x_test, data.y_test, data.clean_train):
        assert array.dtype == np.float64 and array.flags.c_contiguous
    assert data.classes == k
    assert data.labels_train.dtype == np.int64
    np.testing.assert_array_equal(data.labels_train, data.y_train)
    for labels in (data.y_train, data.y_test):
        assert np.all((labels >= 0) & (labels < k) & (labels == np.round(labels)))
    assert data.noisy_index.dtype == np.int64 and data.noisy_index.size == 0
    np.testing.assert_array_equal(data.clean_train, data.y_train)


def test_resolved_dimensions_and_classes():
    assert (ClassificationTask().input_dimension(), ClassificationTask().n_classes) == (16, 4)
    assert ClassificationTask(kind="teacher", classes=3).input_dimension(5) == 5
    assert ClassificationTask(kind="parity").n_classes == 2
    task = ClassificationTask(kind="modular_addition", modulus=11, train_fraction=0.3)
    assert (task.input_dimension(), task.n_classes) == (22, 11)
    assert (task.train_size, task.test_size) == (round(0.3 * 121), 121 - round(0.3 * 121))
    assert (ClassificationTask(kind="digits").input_dimension(), ClassificationTask(kind="digits").n_classes) == (64, 10)
    # An explicit value equal to the fixed one is accepted.
    assert ClassificationTask(kind="digits", classes=10).input_dimension(64) == 64


def test_modular_addition_labels_and_exact_partition_of_pairs():
    p = 7
    task = ClassificationTask(kind="modular_addition", modulus=p, train_fraction=0.4)
    data = make_classification_data(task, SEED)
    all_pairs = []
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        # Each half is an exact one-hot vector; decode a and b from them.
        assert set(np.unique(x)) <= {0.0, 1.0}
        np.testing.assert_array_equal(x[:, :p].sum(axis=1), 1.0)
        np.testing.assert_array_equal(x[:, p:].sum(axis=1), 1.0)
        a, b = np.argmax(x[:, :p], axis=1), np.argmax(x[:, p:], axis=1)
        np.testing.assert_array_equal(y, (a + b) % p)
        all_pairs.append({(int(i), int(j)) for i, j in zip(a, b)})
    train_pairs, test_pairs = all_pairs
    assert len(train_pairs) == data.x_train.shape[0] == round(0.4 * p * p)  # no pair twice within a set
    assert len(test_pairs) == data.x_test.shape[0]
    assert not train_pairs & test_pairs
    assert train_pairs | test_pairs == {(i, j) for i in range(p) for j in range(p)}


def test_parity_labels_recomputed():
    task = ClassificationTask(kind="parity", parity_bits=4, n_train=300, n_test=200)
    data = make_classification_data(task, SEED, input_dim=10)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        assert set(np.unique(x)) == {-1.0, 1.0}
        negatives = np.sum(x[:, :4] < 0, axis=1)
        np.testing.assert_array_equal(y, negatives % 2)  # product is -1 iff an odd number of -1s
    # Uniform inputs make the classes balanced: 300 fair bits have std 0.029 around 0.5.
    assert abs(data.y_train.mean() - 0.5) < 0.15


def test_digits_split_is_disjoint_and_matches_the_shipped_images():
    images, labels = load_digits()
    row_of = {image.tobytes(): row for row, image in enumerate(images)}  # the 1,797 images are distinct
    assert len(row_of) == images.shape[0]
    task = ClassificationTask(kind="digits", n_train=1000, n_test=797)
    data = make_classification_data(task, SEED)
    train_rows = np.array([row_of[x.tobytes()] for x in data.x_train])
    test_rows = np.array([row_of[x.tobytes()] for x in data.x_test])
    np.testing.assert_array_equal(data.y_train, labels[train_rows])
    np.testing.assert_array_equal(data.y_test, labels[test_rows])
    assert len(set(train_rows)) == 1000 and len(set(test_rows)) == 797
    assert not set(train_rows) & set(test_rows)
    # A random split, not the file order.
    assert not np.array_equal(train_rows, np.arange(1000))


def test_gaussian_mixture_nearest_class_mean_accuracy():
    """With the default separation (3.5) and K = 4 the Bayes-optimal accuracy is about 0.90; a
    nearest-class-mean classifier with means estimated from 64 samples per class in 16-D reached
    0.895 on average (std 0.014, lowest 0.855) over 300 seeds of this generator, so 0.8 is more than
    six standard deviations below. A wrong scale fails clearly: means shrunk by sqrt(D) = 4 give 0.40
    here, and identical means chance (0.25)."""
    task = ClassificationTask(kind="gaussian_mixture", classes=4, n_train=256, n_test=512)
    data = make_classification_data(task, SEED, input_dim=16)
    y_train, y_test = data.labels_train, data.labels_test
    np.testing.assert_array_equal(np.bincount(y_train), [64] * 4)  # balanced classes
    means = np.stack([data.x_train[y_train == k].mean(axis=0) for k in range(4)])
    distances = ((data.x_test[:, None, :] - means[None, :, :]) ** 2).sum(axis=-1)
    accuracy = np.mean(np.argmin(distances, axis=1) == y_test)
    assert accuracy > 0.8


def test_gaussian_mixture_means_are_separation_apart_and_noise_is_unit():
    """Per class 8,000 samples: each estimated mean is off by ~ sqrt(D / 8000) = 0.045 in norm, so the
    pairwise distances (exactly 3.0 by construction) are within 0.2 and the within-class std per
    coordinate (1) within 0.02 (its standard error is ~ 1/sqrt(2 * 8000 * 16) = 0.002)."""
    task = ClassificationTask(kind="gaussian_mixture", classes=5, separation=3.0, n_train=40_000, n_test=0)
    data = make_classification_data(task, SEED, input_dim=16)
    y = data.labels_train
    means = np.stack([data.x_train[y == k].mean(axis=0) for k in range(5)])
    pairwise = np.linalg.norm(means[:, None] - means[None, :], axis=-1)[np.triu_indices(5, 1)]
    np.testing.assert_allclose(pairwise, 3.0, atol=0.2)
    np.testing.assert_allclose(np.linalg.norm(means.mean(axis=0)), 0.0, atol=0.1)  # centred at the origin
    residual = data.x_train - means[y]
    np.testing.assert_allclose(residual.std(axis=0), 1.0, atol=0.02)


def test_teacher_labels_are_the_argmax_of_the_teacher():
    task = ClassificationTask(kind="teacher", classes=3, teacher_width=7, n_train=200, n_test=100)
    data = make_classification_data(task, SEED, input_dim=6)
    hidden, readout = classification_teacher(task, SEED, input_dim=6)
    assert hidden.shape == (7, 6) and readout.shape == (3, 7)
    for x, y in ((data.x_train, data.y_train), (data.x_test, data.y_test)):
        outputs = np.array([[readout[k] @ np.tanh(hidden @ sample) for k in range(3)] for sample in x])
        np.testing.assert_array_equal(y, np.argmax(outputs, axis=1))
    assert len(np.unique(data.y_train)) == 3  # the teacher is not degenerate
    # The inputs are standard normal (mean 0, variance 1 per coordinate, 1,200 values each way).
    assert abs(data.x_train.mean()) < 0.15 and abs(data.x_train.var() - 1.0) < 0.15


@pytest.mark.parametrize("kind", CLASSIFICATION_KINDS)
def test_label_noise_changes_exactly_the_chosen_training_labels(kind):
    fraction = 0.3
    clean = make_classification_data(small_task(kind), SEED)
    noisy = make_classification_data(small_task(kind, label_noise=fraction), SEED)
    n_train = clean.y_train.size
    n_flipped = round(fraction * n_train)
    changed = np.flatnonzero(noisy.y_train != clean.y_train)
    assert changed.size == n_flipped  # every chosen label moved to a different class
    np.testing.assert_array_equal(noisy.noisy_index, changed)
    assert np.all((noisy.y_train >= 0) & (noisy.y_train < clean.classes))
    np.testing.assert_array_equal(noisy.clean_train, clean.y_train)
    for name in ("x_train", "x_test", "y_test"):
        np.testing.assert_array_equal(getattr(noisy, name), getattr(clean, name))


def test_label_noise_replacement_is_spread_over_the_other_classes():
    """K = 4, 2,000 flipped labels: each of the 3 other classes should get ~1/3 (std ~0.011)."""
    task = ClassificationTask(kind="gaussian_mixture", n_train=4000, n_test=0, label_noise=0.5)
    data = make_classification_data(task, SEED)
    index = data.noisy_index
    shift = (data.labels_train[index] - data.clean_train[index].astype(np.int64)) % 4
    np.testing.assert_allclose(np.bincount(shift, minlength=4) / index.size, [0, 1 / 3, 1 / 3, 1 / 3], atol=0.05)


@pytest.mark.parametrize("kind", CLASSIFICATION_KINDS)
def test_deterministic_in_task_and_seed(kind):
    task = small_task(kind, label_noise=0.25)
    first, again = make_classification_data(task, SEED), make_classification_data(task, SEED)
    other = make_classification_data(task, SEED + 1)
    for name in ("x_train", "y_train", "x_test", "y_test", "clean_train", "noisy_index"):
        np.testing.assert_array_equal(getattr(first, name), getattr(again, name))
    assert not np.array_equal(first.x_train, other.x_train)
    # task.seed overrides the run seed.
    pinned = small_task(kind, seed=SEED + 1, label_noise=0.25)
    np.testing.assert_array_equal(make_classification_data(pinned, SEED).x_train, other.x_train)


@pytest.mark.parametrize("overrides, field", [
    (dict(kind="images"), "task.kind"),
    (dict(kind="digits", classes=4), "task.classes"),
    (dict(kind="parity", classes=3), "task.classes"),
    (dict(kind="modular_addition", modulus=5, classes=4), "task.classes"),
    (dict(classes=1), "task.classes"),
    (dict(n_train=0), "task.n_train"),
    (dict(n_test=-1), "task.n_test"),
    (dict(seed=-1), "task.seed"),
    (dict(label_noise=1.0), "task.label_noise"),
    (dict(label_noise=-0.1), "task.label_noise"),
    (dict(separation=-1.0), "task.separation"),
    (dict(kind="teacher", teacher_width=0), "task.teacher_width"),
    (dict(kind="parity", parity_bits=0), "task.parity_bits"),
    (dict(kind="modular_addition", modulus=1), "task.modulus"),
    (dict(kind="modular_addition", train_fraction=0.0), "task.train_fraction"),
    (dict(kind="modular_addition", train_fraction=1.0), "task.train_fraction"),
    (dict(kind="modular_addition", modulus=2, train_fraction=0.1), "task.train_fraction"),
    (dict(kind="modular_addition", modulus=2, train_fraction=0.9), "task.train_fraction"),
    (dict(kind="digits", n_train=1000, n_test=798), "task.n_train"),
    (dict(n_train=2.5), "task.n_train"),
])
def test_validation_errors_name_the_field(overrides, field):
    with pytest.raises(ConfigError) as error:
        ClassificationTask(**overrides)
    assert error.value.field == field


# The checks that need the input dimension, which lives in [model] (model.input_dim) for every kind:
# made by the MLP's config, naming the field to change.
@pytest.mark.parametrize("model_dim, task, field", [
    (16, dict(kind="digits"), "model.input_dim"),
    (5, dict(kind="modular_addition", modulus=10), "model.input_dim"),
    (0, dict(), "model.input_dim"),
    (2, dict(kind="gaussian_mixture", classes=4), "task.classes"),
    (4, dict(kind="parity", parity_bits=5), "task.parity_bits"),
])
def test_dimension_errors_name_the_field(model_dim, task, field):
    with pytest.raises(ConfigError) as error:
        kinds.config_from_mapping(dict(model=dict(kind="mlp", input_dim=model_dim), task=task))
    assert error.value.field == field


def test_input_dim_given_in_task_is_read_as_model_input_dim():
    """Configs and files written before the input dimension moved to [model] gave the MLP's in [task];
    they are read as the same run (same data, same digest as the new spelling), and giving both is refused."""
    old = kinds.config_from_mapping(dict(model=dict(kind="mlp"), task=dict(kind="teacher", input_dim=6)))
    new = kinds.config_from_mapping(dict(model=dict(kind="mlp", input_dim=6), task=dict(kind="teacher")))
    assert old.input_dim == new.input_dim == 6 and old.digest() == new.digest()
    assert "input_dim" not in old.to_mapping()["task"]
    with pytest.raises(ConfigError) as error:
        kinds.config_from_mapping(dict(model=dict(kind="mlp", input_dim=6), task=dict(input_dim=6)))
    assert error.value.field == "task.input_dim" and "model.input_dim" in str(error.value)


def test_teacher_weights_only_for_teacher_tasks():
    with pytest.raises(ConfigError) as error:
        classification_teacher(ClassificationTask(kind="parity"), SEED)
    assert error.value.field == "task.kind"


def test_from_mapping_rejects_unknown_keys():
    with pytest.raises(ConfigError) as error:
        ClassificationTask.from_mapping({"kind": "parity", "bits": 3})
    assert error.value.field == "task.bits"
    assert ClassificationTask.from_mapping({"kind": "parity", "parity_bits": 2}).parity_bits == 2
