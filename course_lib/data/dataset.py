"""The :class:`Dataset` type, the registry of datasets and the one :func:`load` entry point."""
from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..config import data_root
from ..errors import CourseError, DatasetNotAvailableError
from ..registry import Registry

SPLITS = ("train", "test")


@dataclass
class Dataset:
    """A labelled dataset held in memory.

    Attributes
    ----------
    name:
        Registry name, e.g. ``"mnist-5k"``.
    x:
        Features, float32 in [0, 1]: ``(N, C, H, W)`` for images, ``(N, D)`` for tables.
    y:
        Labels, int64 of shape ``(N,)`` with values in ``range(len(classes))``.
    classes:
        Class names, index = label.
    kind:
        ``"image"`` or ``"tabular"``.
    feature_names:
        Column names of a tabular dataset (empty for images).
    """

    name: str
    x: torch.Tensor
    y: torch.Tensor
    classes: list[str]
    kind: str = "image"
    feature_names: list[str] = field(default_factory=list)
    _fingerprint: str | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index):
        return self.x[index], self.y[index]

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one sample: ``(C, H, W)`` or ``(D,)``."""
        return tuple(self.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices) -> "Dataset":
        """A new :class:`Dataset` with the rows ``indices`` (a sequence or tensor of ints)."""
        idx = torch.as_tensor(indices, dtype=torch.long)
        return Dataset(self.name, self.x[idx], self.y[idx], list(self.classes), self.kind,
                       list(self.feature_names))

    def without(self, indices) -> "Dataset":
        """A new :class:`Dataset` without the rows ``indices``."""
        keep = torch.ones(len(self), dtype=torch.bool)
        keep[torch.as_tensor(indices, dtype=torch.long)] = False
        return self.subset(torch.nonzero(keep).flatten())

    def fingerprint(self) -> str:
        """A short SHA-256 of the contents (features, labels, class names): what the model cache keys on.

        Relabelled, replaced or reordered samples give another fingerprint, so a model trained on
        the old contents is never returned for the new ones. Computed once per object.
        """
        if self._fingerprint is None:
            import hashlib

            h = hashlib.sha256()
            h.update(repr((tuple(self.x.shape), str(self.x.dtype), list(self.classes), self.kind)).encode())
            h.update(self.x.detach().cpu().contiguous().numpy().tobytes())
            h.update(self.y.detach().cpu().contiguous().numpy().tobytes())
            self._fingerprint = h.hexdigest()[:16]
        return self._fingerprint

    def astype(self, dtype: torch.dtype) -> "Dataset":
        """This dataset with features of ``dtype`` (itself when they already are; float64 models exist)."""
        if self.x.dtype == dtype:
            return self
        return Dataset(self.name, self.x.to(dtype), self.y, list(self.classes), self.kind, list(self.feature_names))

    def class_counts(self) -> list[int]:
        return torch.bincount(self.y, minlength=self.num_classes).tolist()

    def __repr__(self) -> str:
        return (f"Dataset({self.name!r}, n={len(self)}, input_shape={self.input_shape}, "
                f"classes={self.num_classes}, kind={self.kind!r})")


@dataclass(frozen=True)
class DatasetSpec:
    """Registry entry: how to load one dataset and whether it works offline."""

    name: str
    description: str
    embedded: bool
    loader: Callable[[str, Path], Dataset]
    downloader: Callable[[Path], None] | None = None
    present: Callable[[Path], bool] | None = None


#: Every dataset by name (``folder:PATH`` is accepted besides these).
DATASETS: Registry[DatasetSpec] = Registry(
    "dataset", hint="Or folder:PATH for an ImageFolder tree; `course-lib data list` shows which are available.")


def register_dataset(spec: DatasetSpec) -> DatasetSpec:
    """Add ``spec`` to :data:`DATASETS` under its name and return it."""
    return DATASETS.register(spec.name, spec, description=spec.description)


# --------------------------------------------------------------------------- helpers

def _fixed_split(y: np.ndarray, test_fraction: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test index split that never changes (it defines the dataset)."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        rng.shuffle(idx)
        n_test = int(round(test_fraction * len(idx)))
        test.append(idx[:n_test])
        train.append(idx[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def _check_split(split: str) -> str:
    if split not in SPLITS:
        raise CourseError(f"Unknown split {split!r}. Choose 'train' or 'test'.")
    return split


def _images(array: np.ndarray, channels_last: bool) -> torch.Tensor:
    """uint8 array -> float32 tensor in [0, 1] of shape (N, C, H, W)."""
    t = torch.from_numpy(np.ascontiguousarray(array))
    if t.ndim == 3:
        t = t.unsqueeze(1)
    elif channels_last:
        t = t.permute(0, 3, 1, 2)
    return t.float().div_(255.0).contiguous()


# --------------------------------------------------------------------------- public API

def _limit_indices(y: np.ndarray, limit: int, seed: int = 0) -> np.ndarray:
    """A fixed, class-balanced choice of ``limit`` indices (sorted)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(y))
    # round-robin over classes in permuted order so every class is represented
    by_class = {c: [i for i in order if y[i] == c] for c in np.unique(y)}
    chosen: list[int] = []
    pointer = 0
    while len(chosen) < limit:
        for c in by_class:
            if pointer < len(by_class[c]) and len(chosen) < limit:
                chosen.append(by_class[c][pointer])
        pointer += 1
    return np.sort(np.array(chosen))


def dataset_names() -> list[str]:
    """Names of every registered dataset (``folder:PATH`` is accepted besides these)."""
    return DATASETS.names()


def is_available(name: str, root: Path | None = None) -> tuple[bool, str]:
    """Whether :func:`load` would find ``name`` now, and why (one short sentence)."""
    root = Path(root) if root else data_root()
    if name.startswith("folder:"):
        p = Path(name[len("folder:"):]).expanduser()
        return (p.is_dir(), "folder exists" if p.is_dir() else f"no folder at {p}")
    if name not in DATASETS:
        return False, "unknown dataset"
    spec = DATASETS.get(name)
    if spec.embedded:
        try:
            spec.loader("test", root)
            return True, "embedded in an installed package (works offline)"
        except Exception as exc:  # report, do not raise: this feeds `course-lib info`
            return False, f"embedded, but failed to load: {exc}"
    if spec.present and spec.present(root):
        return True, f"on disk under {root / name}"
    return False, f"not downloaded; run `course-lib data download {name}`"


def load(name: str, split: str = "train", *, limit: int | None = None, root: Path | str | None = None) -> Dataset:
    """Load a dataset by name.

    Parameters
    ----------
    name:
        A registry name (see :func:`dataset_names`) or ``folder:PATH``.
    split:
        ``"train"`` or ``"test"``.
    limit:
        Keep at most this many samples, a fixed class-balanced subset (``None``: all).
    root:
        Data root (default :func:`course_lib.config.data_root`).

    Returns
    -------
    Dataset
        Images ``(N, C, H, W)`` or rows ``(N, D)``, float32 in [0, 1]; labels ``(N,)`` int64.

    Raises
    ------
    CourseError
        Unknown name or split, or a malformed folder.
    DatasetNotAvailableError
        A downloadable dataset that is not on disk; the message names the command that fetches it.
    """
    if not isinstance(name, str):
        raise CourseError(f"A dataset is named by a string (see course-lib data list); got {name!r}.")
    _check_split(split)
    root = Path(root) if root else data_root()
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, (int, np.integer)) or limit <= 0):
        raise CourseError(f"limit must be a positive number of samples; got {limit}.")
    if name.startswith("folder:"):
        path = Path(name[len("folder:"):]).expanduser()
        if not path.is_dir():
            raise DatasetNotAvailableError(
                f"No folder at {path}. `folder:PATH` expects an ImageFolder tree with "
                "train/<class>/<image> and test/<class>/<image>.")
        from .folder import load_folder  # here: folder imports this module

        return load_folder(path, split, limit)
    data = DATASETS.get(name).loader(split, root)
    if limit is not None and limit < len(data):
        data = data.subset(_limit_indices(data.y.numpy(), limit))
    return data


def download(name: str, root: Path | str | None = None) -> Path:
    """Download a downloadable dataset into the data root with its real loader.

    Raises :class:`DatasetNotAvailableError` with advice when the download fails (offline).
    """
    root = Path(root) if root else data_root()
    spec = DATASETS.get(name)
    if spec.embedded:
        return root  # nothing to fetch: it ships inside an installed package
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    existed = target.exists()
    try:
        spec.downloader(root)
    except Exception as exc:  # network errors come in many types (URLError, OSError, RuntimeError)
        if not existed:  # leave nothing half-downloaded behind
            shutil.rmtree(target, ignore_errors=True)
        raise DatasetNotAvailableError(
            f"Could not download {name!r} into {root / name}: {type(exc).__name__}: {exc}. "
            "This machine seems to be offline. Run `course-lib data download "
            f"{name}` on a machine with internet access and copy the folder {root / name} here "
            "(or point COURSE_DATA_DIR at a copy). The embedded datasets mnist-5k, digits and "
            "german-credit need no download.") from exc
    return root / name


def split_public_private(data: Dataset, seed: int = 0, public_fraction: float = 0.8) -> tuple[Dataset, Dataset]:
    """The inversion paper's split (Section 4.1): D0 (public, 80 %) and Du (private, 20 %).

    Deterministic for a given ``seed``; the two parts are disjoint and cover ``data``.
    """
    if not 0.0 < public_fraction < 1.0:
        raise CourseError(f"public_fraction must lie in (0, 1); got {public_fraction}.")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(data), generator=gen)
    n_public = int(round(public_fraction * len(data)))
    return data.subset(perm[:n_public].sort().values), data.subset(perm[n_public:].sort().values)


def _check_count(n, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise CourseError(f"{what} must be a whole number >= 0; got {n!r}.")
    return int(n)


def sample_indices(data: Dataset, n: int, seed: int = 0) -> torch.Tensor:
    """``n`` distinct random indices into ``data``, deterministic per ``seed``."""
    n = _check_count(n, "The number of samples")
    if n > len(data):
        raise CourseError(f"Asked for {n} samples but the dataset has only {len(data)}.")
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randperm(len(data), generator=gen)[:n]


def per_class_subset(data: Dataset, per_class: int, seed: int = 0) -> Dataset:
    """At most ``per_class`` random samples of every class (deterministic per ``seed``)."""
    if _check_count(per_class, "per_class") == 0:
        raise CourseError("per_class must be at least 1: an empty subset cannot train a model.")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = []
    for c in range(data.num_classes):
        idx = torch.nonzero(data.y == c).flatten()
        chosen.append(idx[torch.randperm(len(idx), generator=gen)[:per_class]])
    return data.subset(torch.cat(chosen).sort().values)
