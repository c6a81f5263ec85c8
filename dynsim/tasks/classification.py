"""K-class classification data for deep MLPs.

The one-output tasks of ``dynsim.tasks`` have scalar targets; the tasks here have K classes and are
meant for networks with K outputs (a softmax / cross-entropy head, or one-hot targets). Labels are
stored as the class index 0..K-1 in a float64 array (the HDF5 layout of ``y`` is float64), with an
int64 view in ``ClassificationData.labels_train`` / ``labels_test``.

All data are drawn on the host from ``numpy.random.Generator(PCG64)`` seeded by
``SeedSequence([seed, tag])``, ``seed`` the task seed (the run seed when ``task.seed`` is None) and
``tag`` an integer fixed per kind, so the data are a deterministic function of (task, seed).

Tasks (D = ``task.input_dimension(model.input_dim)``: the network's ``[model] input_dim``, as for every
kind, or the dimension a data set fixes; K = ``task.n_classes``, P = ``task.train_size``):

* ``gaussian_mixture``: K Gaussian clusters. The class means are the K vertices of a regular simplex,
  centred at the origin, randomly rotated into R^D, with every pair of means exactly ``separation``
  apart; a sample of class k is ``mean_k + N(0, I_D)``. So ``separation`` is the distance between any
  two class means in units of the within-class standard deviation (1 along every direction), and
  the Bayes-optimal accuracy depends on (separation, K) only, not on D or the seed: for K = 4 it is
  about 0.84 at separation 3, 0.90 at 3.5 (the default), 0.94 at 4. Equidistant means need
  K <= D + 1. Labels are balanced: class k appears floor or ceil of P / K times, in random order
  (the same for the test set).
* ``teacher``: x ~ N(0, I_D); the label is the argmax of the K outputs of a random one-hidden-layer
  tanh network without biases, ``readout @ tanh(hidden @ x)``, with hidden weights [teacher_width, D]
  drawn N(0, 1 / D) and readout weights [K, teacher_width] drawn N(0, 1 / teacher_width). Classes
  are not balanced (their frequencies follow the teacher); ``classification_teacher`` returns the
  teacher's weights.
* ``parity``: x uniform on {-1, +1}^D; the label is 1 if the product of the first ``parity_bits``
  coordinates is -1 and 0 otherwise (sparse parity: the other D - parity_bits coordinates are
  irrelevant). K = 2.
* ``modular_addition``: all p^2 pairs (a, b) in {0..p-1}^2, p = ``modulus``; the input is
  ``concat(one_hot(a), one_hot(b))`` in {0, 1}^(2p) and the label is (a + b) mod p, so D = 2p and
  K = p. A random permutation of the pairs splits them: the first ``round(train_fraction * p^2)`` are
  the training set, all the others the test set. ``n_train`` and ``n_test`` are ignored for this
  kind (a frozen dataclass cannot tell a default from an explicit value); ``train_size`` and
  ``test_size`` give the sizes used.
* ``digits``: the 1,797 8x8 handwritten digits shipped with dynsim (``dynsim.datasets.load_digits``,
  pixels in [0, 1]), D = 64, K = 10. A random permutation splits them: its first ``n_train`` images
  are the training set, the next ``n_test`` the test set (n_train + n_test <= 1797).
* ``mnist1d``: MNIST-1D (S. Greydanus, D. Kobak; ``dynsim/datasets/mnist1d.h5``, made by
  ``data/scripts/make_mnist1d.py``), D = 40, K = 10, in the package's own split of 4,000 training and
  1,000 test signals. A random permutation of each split draws the subsets: the first ``n_train`` of
  the training signals (n_train <= 4000) and the first ``n_test`` of the test signals (n_test <= 1000).

``label_noise`` = f replaces exactly round(f * P) training labels, chosen at random, each by a class
drawn uniformly among the K - 1 other classes; test labels stay clean. The noise is drawn from its own
stream, ``SeedSequence([seed, tag, 1])``, so the same task without noise has identical inputs and
clean labels, and ``ClassificationData.clean_train`` / ``noisy_index`` say which labels changed.

``holdout`` = "validation" (unset: "test") carves a validation set out of the training data, for
choosing hyperparameters without looking at the test set: the data are drawn exactly as for the same
task without it (the same n_train training samples, label noise included), then the run trains on the
first n_train - n_test of them and evaluates (``x_test`` / ``y_test``, recorded as the test
observables) on the last n_test of them; the task's own test set is not used. So a run with
holdout = "validation" and the same seed never sees the test set of the run without it, and its
validation samples are training samples of that run. Needs 1 <= n_test < n_train; not for
modular_addition (its split is train_fraction). ``train_size`` / ``test_size`` are the fitted and
validation sizes then.
"""
import dataclasses
import math

import numpy as np

from ..datasets import DIGITS_SHAPE, MNIST1D_DIM, MNIST1D_SIZES, load_digits, load_mnist1d
from ..spec import ConfigError, Section, option

# New kinds go at the end: a kind's position is its stream tag, so the earlier kinds' data stay as they were.
CLASSIFICATION_KINDS = ("gaussian_mixture", "teacher", "parity", "modular_addition", "digits", "mnist1d")
# Offset from the one-output tasks' tags (0..3), so that no classification stream coincides with
# one of theirs for the same seed (both modules have a 'teacher').
_KIND_TAG = {name: 100 + i for i, name in enumerate(CLASSIFICATION_KINDS)}
_LABEL_NOISE_STREAM = 1
HOLDOUTS = ("test", "validation")

_DEFAULT_INPUT_DIM = 16
_DEFAULT_CLASSES = 4
_DIGITS_CLASSES = 10
_MNIST1D_CLASSES = 10


@dataclasses.dataclass(frozen=True)
class ClassificationTask(Section):
    SECTION = "task"
    kind: str = option("gaussian_mixture", "str", "data set", choices=CLASSIFICATION_KINDS)
    classes: int = option(None, "int", "number of classes K (default: 4; parity: 2, modular_addition: modulus "
                                       "and digits, mnist1d: 10, fixed)", minimum=2, maximum=100_000, optional=True)
    n_train: int = option(256, "int", "training samples P (ignored by modular_addition)", minimum=1,
                          maximum=10_000_000)
    n_test: int = option(512, "int", "test samples (ignored by modular_addition)", minimum=0, maximum=10_000_000)
    seed: int = option(None, "int", "data seed (default: run.seed)", minimum=0, maximum=2**63 - 1, optional=True)
    label_noise: float = option(0.0, "float", "fraction of training labels replaced by a different class, "
                                              "in [0, 1)", minimum=0.0, maximum=1.0)
    separation: float = option(3.5, "float", "gaussian_mixture: distance between any two class means in units "
                                             "of the within-class std", minimum=0.0)
    teacher_width: int = option(32, "int", "teacher: hidden units of the tanh teacher", minimum=1,
                                maximum=100_000)
    parity_bits: int = option(3, "int", "parity: the label is the parity of the first parity_bits inputs",
                              minimum=1, maximum=1_000_000)
    modulus: int = option(23, "int", "modular_addition: the modulus p", minimum=2, maximum=1024)
    train_fraction: float = option(0.4, "float", "modular_addition: fraction of the p^2 pairs used for training, "
                                                 "in (0, 1)", minimum=0.0, maximum=1.0, exclusive_minimum=True)
    # optional, unset = "test": configs without it keep their TOML text and digest
    holdout: str = option(None, "str", "what the test observables are measured on: 'test' (default) the test "
                                       "set; 'validation' the last n_test of the n_train training samples, the "
                                       "run training on the first n_train - n_test", choices=HOLDOUTS,
                          optional=True)

    @property
    def fixed_dimension(self) -> int | None:
        """The input dimension D a data set fixes (digits: 64, mnist1d: 40, modular_addition: 2 * modulus),
        None where the task draws inputs of any dimension (they take ``model.input_dim``)."""
        if self.kind == "digits":
            return DIGITS_SHAPE[1]
        if self.kind == "mnist1d":
            return MNIST1D_DIM
        if self.kind == "modular_addition":
            return 2 * self.modulus
        return None

    @property
    def validation(self) -> bool:
        """True when the test observables are measured on a validation split of the training data."""
        return self.holdout == "validation"

    def input_dimension(self, model_input_dim: int | None = None) -> int:
        """The input dimension D of this task's data for a network declaring ``model.input_dim``
        (None: the task's own, 16 where it has none); ``ConfigError`` naming ``model.input_dim`` when
        the data set fixes another one."""
        fixed = self.fixed_dimension
        if fixed is not None and model_input_dim is not None and model_input_dim != fixed:
            raise ConfigError("model.input_dim", f"got {model_input_dim}; task.kind = {self.kind!r} has input "
                                                 f"dimension {fixed}: leave model.input_dim unset or set it to {fixed}")
        if fixed is not None:
            return fixed
        return _DEFAULT_INPUT_DIM if model_input_dim is None else int(model_input_dim)

    def check_dimension(self, dim: int) -> None:
        """The checks that need the input dimension D (``input_dimension``): equidistant class means
        and parity bits fit in D."""
        if self.kind == "gaussian_mixture" and self.n_classes > dim + 1:
            self.fail("classes", f"got {self.n_classes} classes in model.input_dim = {dim}; equidistant class "
                                 f"means need classes <= input_dim + 1: lower classes or set model.input_dim >= "
                                 f"{self.n_classes - 1}")
        if self.kind == "parity" and self.parity_bits > dim:
            self.fail("parity_bits", f"got {self.parity_bits}; must be <= model.input_dim ({dim}): "
                                     "lower parity_bits or raise model.input_dim")

    @property
    def n_classes(self) -> int:
        """The number of classes K."""
        if self.kind == "parity":
            return 2
        if self.kind == "modular_addition":
            return self.modulus
        if self.kind == "digits":
            return _DIGITS_CLASSES
        if self.kind == "mnist1d":
            return _MNIST1D_CLASSES
        return _DEFAULT_CLASSES if self.classes is None else self.classes

    @property
    def train_size(self) -> int:
        """Training samples: n_train, or round(train_fraction * p^2) for modular_addition; with
        holdout = "validation" the n_train - n_test that are fitted."""
        if self.validation:
            return self.n_train - self.n_test
        if self.kind == "modular_addition":
            return int(round(self.train_fraction * self.modulus ** 2))
        return self.n_train

    @property
    def test_size(self) -> int:
        """Test samples: n_test, or the p^2 - train_size remaining pairs for modular_addition (with
        holdout = "validation": the n_test validation samples)."""
        if self.kind == "modular_addition":
            return self.modulus ** 2 - self.train_size
        return self.n_test

    def check(self):
        fixed_classes = {"parity": 2, "modular_addition": self.modulus, "digits": _DIGITS_CLASSES,
                         "mnist1d": _MNIST1D_CLASSES}.get(self.kind)
        if fixed_classes is not None and self.classes is not None and self.classes != fixed_classes:
            self.fail("classes", f"got {self.classes}; task.kind = {self.kind!r} has {fixed_classes} classes: "
                                 f"leave classes unset or set it to {fixed_classes}")
        if self.validation and self.kind == "modular_addition":
            self.fail("holdout", "got 'validation'; modular_addition splits its pairs by train_fraction: "
                                 "remove holdout or set it to 'test'")
        if self.label_noise >= 1.0:
            self.fail("label_noise", f"got {self.label_noise}; must be < 1 (a fraction of the training labels "
                                     "to replace; 1 would leave no clean label)")
        if self.kind == "modular_addition":
            if self.train_fraction >= 1.0:
                self.fail("train_fraction", f"got {self.train_fraction}; must be < 1 so that some pairs are "
                                            "left for the test set")
            if not 1 <= self.train_size <= self.modulus ** 2 - 1:
                self.fail("train_fraction", f"got {self.train_fraction}, which gives {self.train_size} of the "
                                            f"{self.modulus ** 2} pairs for training; training and test sets "
                                            "both need at least one pair: move train_fraction towards 0.5 or "
                                            "raise modulus")
        if self.validation:
            if not 1 <= self.n_test < self.n_train:
                self.fail("holdout", f"got 'validation' with n_test = {self.n_test} and n_train = {self.n_train}; the "
                                     "validation set is the last n_test of the n_train training samples: set "
                                     "1 <= task.n_test < task.n_train")
            if self.kind == "digits" and self.n_train > DIGITS_SHAPE[0]:
                self.fail("n_train", f"got {self.n_train}; there are {DIGITS_SHAPE[0]} digit images: lower n_train")
        elif self.kind == "digits" and self.n_train + self.n_test > DIGITS_SHAPE[0]:
            self.fail("n_train", f"n_train + n_test = {self.n_train} + {self.n_test} exceeds the "
                                 f"{DIGITS_SHAPE[0]} digit images: lower n_train or n_test")
        if self.kind == "mnist1d":
            for field, value, size, split in (("n_train", self.n_train, MNIST1D_SIZES[0], "training"),
                                              ("n_test", self.n_test, MNIST1D_SIZES[1], "test")):
                if value > size:
                    self.fail(field, f"got {value}; MNIST-1D has {size} {split} signals: lower {field}")


@dataclasses.dataclass(frozen=True)
class ClassificationData:
    x_train: np.ndarray       # [P, D] float64
    y_train: np.ndarray       # [P] float64 class index 0..K-1 (after label noise)
    x_test: np.ndarray        # [P_test, D] float64
    y_test: np.ndarray        # [P_test] float64 class index (always clean)
    classes: int              # K
    clean_train: np.ndarray   # [P] float64 training labels before label noise
    noisy_index: np.ndarray   # [round(label_noise * P)] int64, sorted: training samples whose label changed

    @property
    def labels_train(self) -> np.ndarray:
        return self.y_train.astype(np.int64)

    @property
    def labels_test(self) -> np.ndarray:
        return self.y_test.astype(np.int64)


def _task_seed(task: ClassificationTask, run_seed: int) -> int:
    return run_seed if task.seed is None else task.seed


def _stream(seed: int, *tags: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, *tags])))


def _balanced_labels(rng: np.random.Generator, n: int, classes: int) -> np.ndarray:
    """n labels with every class appearing floor or ceil of n / classes times, in random order."""
    return rng.permutation(np.arange(n) % classes)


def _simplex_means(rng: np.random.Generator, classes: int, dim: int, separation: float) -> np.ndarray:
    """[classes, dim]: vertices of a regular simplex centred at 0, all pairwise distances = separation,
    randomly rotated into R^dim (needs classes <= dim + 1)."""
    # The centred standard basis e_k - 1/K has pairwise distances sqrt(2) and spans K - 1 dimensions;
    # its SVD gives those K points in coordinates of R^(K-1).
    centred = np.eye(classes) - 1.0 / classes
    left, singular, _ = np.linalg.svd(centred)
    coordinates = left[:, : classes - 1] * singular[: classes - 1]
    # A uniformly random orthonormal (K-1)-frame in R^dim (QR of a Gaussian matrix, signs fixed).
    gaussian = rng.standard_normal((dim, classes - 1))
    frame, upper = np.linalg.qr(gaussian)
    frame = frame * np.sign(np.diag(upper))
    return separation / math.sqrt(2.0) * coordinates @ frame.T


def _draw_teacher(rng: np.random.Generator, task: ClassificationTask, dim: int) -> tuple[np.ndarray, np.ndarray]:
    hidden = rng.standard_normal((task.teacher_width, dim)) / math.sqrt(dim)
    readout = rng.standard_normal((task.n_classes, task.teacher_width)) / math.sqrt(task.teacher_width)
    return hidden, readout


def _teacher_labels(hidden: np.ndarray, readout: np.ndarray, x: np.ndarray) -> np.ndarray:
    return np.argmax(np.tanh(x @ hidden.T) @ readout.T, axis=1)


def classification_teacher(task: ClassificationTask, run_seed: int,
                           input_dim: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The teacher of a ``teacher`` task on inputs of ``task.input_dimension(input_dim)``: (hidden
    [teacher_width, D], readout [K, teacher_width]); the label of x is argmax(readout @ tanh(hidden @ x)).
    The same weights make_classification_data uses."""
    if task.kind != "teacher":
        task.fail("kind", f"got {task.kind!r}; only task.kind = 'teacher' has a teacher network")
    return _draw_teacher(_stream(_task_seed(task, run_seed), _KIND_TAG["teacher"]), task,
                         task.input_dimension(input_dim))


def _one_hot_pairs(pairs: np.ndarray, modulus: int) -> np.ndarray:
    x = np.zeros((pairs.shape[0], 2 * modulus))
    rows = np.arange(pairs.shape[0])
    x[rows, pairs[:, 0]] = 1.0
    x[rows, modulus + pairs[:, 1]] = 1.0
    return x


def _clean_data(task: ClassificationTask, rng: np.random.Generator, d: int):
    """(x_train, y_train, x_test, y_test) of inputs in R^d without label noise; labels int64."""
    k = task.n_classes
    n_train, n_test = task.train_size, task.test_size
    if task.kind == "gaussian_mixture":
        means = _simplex_means(rng, k, d, task.separation)
        y_train = _balanced_labels(rng, n_train, k)
        x_train = means[y_train] + rng.standard_normal((n_train, d))
        y_test = _balanced_labels(rng, n_test, k)
        x_test = means[y_test] + rng.standard_normal((n_test, d))
    elif task.kind == "teacher":
        hidden, readout = _draw_teacher(rng, task, d)  # drawn first: classification_teacher repeats this draw
        x_train = rng.standard_normal((n_train, d))
        x_test = rng.standard_normal((n_test, d))
        y_train, y_test = _teacher_labels(hidden, readout, x_train), _teacher_labels(hidden, readout, x_test)
    elif task.kind == "parity":
        x_train = 2.0 * rng.integers(0, 2, (n_train, d)) - 1.0
        x_test = 2.0 * rng.integers(0, 2, (n_test, d)) - 1.0

        def parity(x):
            return (np.prod(x[:, : task.parity_bits], axis=1) < 0.0).astype(np.int64)
        y_train, y_test = parity(x_train), parity(x_test)
    elif task.kind == "modular_addition":
        p = task.modulus
        first, second = np.divmod(rng.permutation(p * p), p)
        pairs = np.column_stack([first, second])
        x_all, y_all = _one_hot_pairs(pairs, p), (first + second) % p
        x_train, y_train = x_all[:n_train], y_all[:n_train]
        x_test, y_test = x_all[n_train:], y_all[n_train:]
    elif task.kind == "mnist1d":
        x_pool, y_pool, x_test_pool, y_test_pool = load_mnist1d()
        train_rows = rng.permutation(x_pool.shape[0])[:n_train]
        test_rows = rng.permutation(x_test_pool.shape[0])[:n_test]
        x_train, y_train = x_pool[train_rows], y_pool[train_rows]
        x_test, y_test = x_test_pool[test_rows], y_test_pool[test_rows]
    else:  # digits
        images, digit_labels = load_digits()
        order = rng.permutation(images.shape[0])
        train_rows, test_rows = order[:n_train], order[n_train: n_train + n_test]
        x_train, y_train = images[train_rows], digit_labels[train_rows]
        x_test, y_test = images[test_rows], digit_labels[test_rows]
    return x_train, y_train, x_test, y_test


def make_classification_data(task: ClassificationTask, run_seed: int,
                             input_dim: int | None = None) -> ClassificationData:
    """Build the data of a classification task on inputs of dimension ``task.input_dimension(input_dim)``
    (``input_dim``: the network's ``model.input_dim``); deterministic in (task, D, seed), seed = task.seed
    or run_seed."""
    seed = _task_seed(task, run_seed)
    tag = _KIND_TAG[task.kind]
    d = task.input_dimension(input_dim)
    task.check_dimension(d)
    # with a validation holdout, the data of the same task without it, whose training set is split below
    drawn = dataclasses.replace(task, holdout=None, n_test=0) if task.validation else task
    x_train, clean_labels, x_test, y_test = _clean_data(drawn, _stream(seed, tag), d)
    k, n_train = task.n_classes, drawn.train_size
    noisy_labels = np.array(clean_labels, dtype=np.int64)
    n_noisy = int(round(task.label_noise * n_train))
    noisy_index = np.zeros(0, dtype=np.int64)
    if n_noisy > 0:
        noise_rng = _stream(seed, tag, _LABEL_NOISE_STREAM)
        noisy_index = np.sort(noise_rng.permutation(n_train)[:n_noisy]).astype(np.int64)
        # A shift by 1..K-1 (mod K) is uniform over the K - 1 other classes and never the same class.
        shift = noise_rng.integers(1, k, n_noisy)
        noisy_labels[noisy_index] = (noisy_labels[noisy_index] + shift) % k
    if task.validation:
        n_fit = task.train_size
        x_train, x_test, y_test = x_train[:n_fit], x_train[n_fit:], noisy_labels[n_fit:]
        noisy_labels, clean_labels = noisy_labels[:n_fit], np.asarray(clean_labels)[:n_fit]
        noisy_index, n_train = noisy_index[noisy_index < n_fit], n_fit
    return ClassificationData(
        x_train=np.ascontiguousarray(x_train, dtype=np.float64).reshape(n_train, d),
        y_train=np.ascontiguousarray(noisy_labels, dtype=np.float64),
        x_test=np.ascontiguousarray(x_test, dtype=np.float64).reshape(task.test_size, d),
        y_test=np.ascontiguousarray(y_test, dtype=np.float64).reshape(task.test_size),
        classes=k,
        clean_train=np.ascontiguousarray(clean_labels, dtype=np.float64),
        noisy_index=noisy_index)
