"""Write dynsim/datasets/digits.h5 from scikit-learn's copy of the UCI handwritten digits (run once).

    python data/scripts/make_digits.py path/to/sklearn/datasets/data/digits.csv.gz

The CSV ships inside the scikit-learn wheel (``sklearn/datasets/data/digits.csv.gz``; unzip the
wheel, no install needed): 1,797 rows of 64 pixel counts (0..16, an 8x8 image in row-major order)
followed by the class label. scikit-learn is not a dependency of dynsim; this script only reads
the CSV, and dynsim reads the HDF5 file it writes with h5py.
"""
import gzip
import hashlib
import sys
from pathlib import Path

import h5py
import numpy as np

OUT = Path(__file__).resolve().parents[2] / "dynsim" / "datasets" / "digits.h5"


def main(csv_gz: str) -> None:
    raw = Path(csv_gz).read_bytes()
    table = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",", dtype=np.int64)
    if table.shape != (1797, 65) or table[:, :64].min() < 0 or table[:, :64].max() > 16:
        raise SystemExit(f"unexpected table: shape {table.shape}")
    with h5py.File(OUT, "w") as f:
        f.create_dataset("images", data=table[:, :64].astype(np.uint8), compression="gzip", shuffle=True)
        f.create_dataset("labels", data=table[:, 64].astype(np.uint8), compression="gzip", shuffle=True)
        f.attrs.update(
            name="Optical Recognition of Handwritten Digits (UCI), test set as in scikit-learn load_digits",
            source="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
            creators="E. Alpaydin, C. Kaynak (1998)",
            licence="CC BY 4.0 (UCI Machine Learning Repository)",
            layout="images [1797, 64] uint8: 8x8 pixel counts 0..16, row-major; labels [1797] uint8 0..9",
            produced_from="sklearn/datasets/data/digits.csv.gz of scikit-learn 1.9.1 (wheel)",
            source_sha256=hashlib.sha256(raw).hexdigest())
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main(sys.argv[1])
