"""Write dynsim/datasets/mnist1d.h5: the standard MNIST-1D data set, generated offline (run once).

    pip install --target /tmp/mnist1d mnist1d==0.0.2.post1 --no-deps
    PYTHONPATH=/tmp/mnist1d python data/scripts/make_mnist1d.py

MNIST-1D (S. Greydanus, D. Kobak, https://github.com/greydanus/mnist1d, Apache-2.0) is generated
by the package's ``make_dataset`` with its default arguments (``get_dataset_args()``: 5,000
samples, 80 % for training, 40-dimensional signals, 10 classes, seed 42), which is the data set
the package would otherwise download as ``mnist1d_data.pkl``. The package is not a dependency of
dynsim: it is needed only to run this script (it needs numpy, scipy and matplotlib, which the
venv has; its ``requests`` import serves only the download path, which this script never takes,
so a stand-in module is put in its place when requests is not installed). dynsim reads the HDF5
file this script writes with h5py. The file's sha256 of the x / y arrays is stored in its
attributes, so a regeneration can be compared with the shipped one.
"""
import hashlib
import importlib.util
import json
import sys
import types
from importlib import metadata
from pathlib import Path

import h5py
import numpy as np

OUT = Path(__file__).resolve().parents[2] / "dynsim" / "datasets" / "mnist1d.h5"


def _digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def main() -> None:
    if importlib.util.find_spec("requests") is None:
        sys.modules["requests"] = types.ModuleType("requests")  # the download path only; never called here
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    data = make_dataset(args)
    x_train, x_test = np.asarray(data["x"], dtype=np.float64), np.asarray(data["x_test"], dtype=np.float64)
    y_train, y_test = np.asarray(data["y"]), np.asarray(data["y_test"])
    if x_train.shape != (4000, 40) or x_test.shape != (1000, 40) or set(np.unique(y_train)) != set(range(10)):
        raise SystemExit(f"unexpected data set: x {x_train.shape} / {x_test.shape}")
    with h5py.File(OUT, "w") as f:
        for name, values in (("x_train", x_train), ("x_test", x_test)):
            f.create_dataset(name, data=values.astype(np.float32), compression="gzip", shuffle=True)
        for name, values in (("y_train", y_train), ("y_test", y_test)):
            f.create_dataset(name, data=values.astype(np.uint8), compression="gzip", shuffle=True)
        stored = [f[n][()] for n in ("x_train", "y_train", "x_test", "y_test")]
        f.attrs.update(
            name="MNIST-1D (the standard data set of the mnist1d package, default arguments)",
            source="https://github.com/greydanus/mnist1d",
            creators="S. Greydanus, D. Kobak (2020; arXiv 2011.14439)",
            licence="Apache-2.0",
            layout="x_train [4000, 40] float32, y_train [4000] uint8 0..9, x_test [1000, 40] float32, "
                   "y_test [1000] uint8 0..9; the package's own train/test split, its sample order",
            package_version=metadata.version("mnist1d"),
            args=json.dumps({k: v for k, v in dict(args).items()} if isinstance(args, dict) else vars(args)),
            produced_by="mnist1d.data.make_dataset(get_dataset_args()) in data/scripts/make_mnist1d.py",
            sha256=_digest(*stored))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
