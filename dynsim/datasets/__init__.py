"""Small real data sets shipped with dynsim (read with h5py; provenance and licence in the files).

``digits.h5``: the 1,797 8x8 handwritten digits of the UCI "Optical Recognition of Handwritten
Digits" test set, as scikit-learn's ``load_digits`` has them (pixel counts 0..16). Made once by
``data/scripts/make_digits.py``; licence CC BY 4.0 (UCI Machine Learning Repository); see
``DIGITS.md`` beside it.

``mnist1d.h5``: MNIST-1D (S. Greydanus, D. Kobak), the standard set of the ``mnist1d`` package in its own
split of 4,000 training and 1,000 test signals of length 40. Made once by ``data/scripts/make_mnist1d.py``;
licence Apache-2.0; see ``MNIST1D.md`` beside it.
"""
from importlib import resources

import h5py
import numpy as np

DIGITS_SHAPE = (1797, 64)
MNIST1D_SIZES = (4000, 1000)  # the package's training and test signals
MNIST1D_DIM = 40


def load_digits() -> tuple[np.ndarray, np.ndarray]:
    """(images [1797, 64] float64 in [0, 1] (pixel count / 16), labels [1797] int64)."""
    with resources.as_file(resources.files(__name__) / "digits.h5") as path, h5py.File(path, "r") as f:
        images = f["images"][()].astype(np.float64) / 16.0
        labels = f["labels"][()].astype(np.int64)
    return images, labels


def load_mnist1d() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST-1D as shipped: (x_train [4000, 40] float64, y_train [4000] int64, x_test [1000, 40], y_test [1000])."""
    with resources.as_file(resources.files(__name__) / "mnist1d.h5") as path, h5py.File(path, "r") as f:
        return (f["x_train"][()].astype(np.float64), f["y_train"][()].astype(np.int64),
                f["x_test"][()].astype(np.float64), f["y_test"][()].astype(np.int64))


def digits_provenance() -> dict:
    """The attributes of digits.h5: source, creators, licence, the sha256 of the CSV it was made from."""
    with resources.as_file(resources.files(__name__) / "digits.h5") as path, h5py.File(path, "r") as f:
        return {k: str(v) for k, v in f.attrs.items()}
