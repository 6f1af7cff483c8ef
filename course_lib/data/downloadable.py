"""The downloadable datasets: the real torchvision / medmnist loaders, cached under the data root.

Offline and not on disk, a dataset raises :class:`~course_lib.errors.DatasetNotAvailableError`
naming the command that fetches it; nothing is substituted.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import DatasetNotAvailableError
from .dataset import SPLITS, Dataset, DatasetSpec, _images, register_dataset


def _not_on_disk(name: str, root: Path) -> DatasetNotAvailableError:
    return DatasetNotAvailableError(
        f"The dataset {name!r} is not on disk under {root / name}. Fetch it once, on a machine "
        f"with internet access, with `course-lib data download {name}` (it is cached there "
        f"afterwards; set COURSE_DATA_DIR to keep it elsewhere). The embedded datasets "
        f"mnist-5k, digits and german-credit work offline.")


def _torchvision_spec(name: str, description: str, cls_name: str, split_kw: str) -> DatasetSpec:
    def make(root: Path, split: str, download: bool):
        import torchvision.datasets as tvd

        cls = getattr(tvd, cls_name)
        kwargs = {"train": split == "train"} if split_kw == "train" else {"split": split}
        return cls(str(root / name), download=download, **kwargs)

    def loader(split: str, root: Path) -> Dataset:
        try:
            ds = make(root, split, download=False)
        except (RuntimeError, FileNotFoundError, OSError) as exc:
            raise _not_on_disk(name, root) from exc
        data = ds.data.numpy() if isinstance(ds.data, torch.Tensor) else np.asarray(ds.data)
        if name == "stl10":  # (N, 3, 96, 96) already channels first
            x = torch.from_numpy(data).float().div_(255.0)
            y = torch.as_tensor(np.asarray(ds.labels), dtype=torch.long)
        else:
            x = _images(data, channels_last=data.ndim == 4)
            y = torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)
        return Dataset(name, x, y, list(ds.classes))

    def downloader(root: Path) -> None:
        for split in SPLITS:
            make(root, split, download=True)

    def present(root: Path) -> bool:
        try:
            make(root, "test", download=False)
            return True
        except Exception:
            return False

    return DatasetSpec(name, description, False, loader, downloader, present)


register_dataset(_torchvision_spec("mnist", "MNIST, 60,000 + 10,000 digits (torchvision)", "MNIST", "train"))
register_dataset(_torchvision_spec("cifar10", "CIFAR-10, 50,000 + 10,000 colour 32x32 images (torchvision)",
                                   "CIFAR10", "train"))
register_dataset(_torchvision_spec("cifar100", "CIFAR-100, 100 classes of colour 32x32 images (torchvision)",
                                   "CIFAR100", "train"))
register_dataset(_torchvision_spec("stl10", "STL-10, 5,000 + 8,000 labelled colour 96x96 images (torchvision)",
                                   "STL10", "split"))


def _pneumonia_make(root: Path, split: str, download: bool):
    import medmnist

    return medmnist.PneumoniaMNIST(split=split, root=str(root / "pneumonia"), size=128, download=download)


def _load_pneumonia(split: str, root: Path) -> Dataset:
    (root / "pneumonia").mkdir(parents=True, exist_ok=True)
    try:
        ds = _pneumonia_make(root, split, download=False)
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise _not_on_disk("pneumonia", root) from exc
    x = _images(np.asarray(ds.imgs), channels_last=False)
    y = torch.as_tensor(np.asarray(ds.labels).reshape(-1), dtype=torch.long)
    return Dataset("pneumonia", x, y, ["normal", "pneumonia"])


def _download_pneumonia(root: Path) -> None:
    (root / "pneumonia").mkdir(parents=True, exist_ok=True)
    for split in SPLITS:
        _pneumonia_make(root, split, download=True)


def _pneumonia_present(root: Path) -> bool:
    return (root / "pneumonia" / "pneumoniamnist_128.npz").exists()


register_dataset(DatasetSpec("pneumonia", "Chest X-ray pneumonia (PneumoniaMNIST, 1x128x128, 2 classes, medmnist)",
                             False, _load_pneumonia, _download_pneumonia, _pneumonia_present))
