"""``folder:PATH``: any ImageFolder tree with ``train/<class>/*`` and ``test/<class>/*``."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..errors import CourseError
from .dataset import Dataset, _images, _limit_indices


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_folder(path: Path, split: str, limit: int | None) -> Dataset:
    from PIL import Image

    split_dir = path / split
    if not split_dir.is_dir():
        raise CourseError(
            f"folder:{path} has no '{split}/' sub-folder. An ImageFolder tree needs "
            f"train/<class>/<image> and test/<class>/<image>.")
    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir())
    if not classes:
        raise CourseError(f"{split_dir} has no class sub-folders (expected {split}/<class>/<image>).")
    files, labels = [], []
    for label, cls in enumerate(classes):
        for f in sorted((split_dir / cls).iterdir()):
            if f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(label)
    if not files:
        raise CourseError(f"No images found under {split_dir}/<class>/.")
    labels_np = np.array(labels, dtype=np.int64)
    if limit is not None and limit < len(files):
        keep = _limit_indices(labels_np, limit)
        files = [files[i] for i in keep]
        labels_np = labels_np[keep]
    arrays = []
    for f in files:
        try:
            with Image.open(f) as im:
                arrays.append(np.asarray(im.convert("RGB") if im.mode not in ("L", "RGB") else im))
        except OSError as exc:
            raise CourseError(f"Cannot read the image {f}: {exc}. Remove or replace the file.") from exc
    shapes = {a.shape for a in arrays}
    if len(shapes) != 1:
        raise CourseError(
            f"The images under {split_dir} have different sizes or modes {sorted(shapes)[:3]}...; "
            "resize them to one size first.")
    stack = np.stack(arrays)
    _check_other_split(path, split, classes, stack.shape[1:])
    x = _images(stack, channels_last=stack.ndim == 4)
    return Dataset(f"folder:{path}", x, torch.from_numpy(labels_np), classes)


def _image_shape(f: Path) -> tuple[int, ...]:
    from PIL import Image

    with Image.open(f) as im:
        channels = 1 if im.mode == "L" else 3
        return (im.height, im.width) if channels == 1 else (im.height, im.width, 3)


def _check_other_split(path: Path, split: str, classes: list[str], shape: tuple[int, ...]) -> None:
    """The other split must have the same classes and images of the same size and channels.

    Otherwise a model trained on one split would be scored against the other split's labels.
    """
    other = "test" if split == "train" else "train"
    other_dir = path / other
    if not other_dir.is_dir():
        raise CourseError(f"folder:{path} has no '{other}/' sub-folder. An ImageFolder tree needs "
                          f"train/<class>/<image> and test/<class>/<image>.")
    other_classes = sorted(d.name for d in other_dir.iterdir() if d.is_dir())
    if other_classes != classes:
        only_here = sorted(set(classes) - set(other_classes))
        only_there = sorted(set(other_classes) - set(classes))
        raise CourseError(f"folder:{path}: {split}/ and {other}/ must have the same class folders (the label of a "
                          f"class is its position in the sorted list). Only in {split}/: {only_here or 'none'}; "
                          f"only in {other}/: {only_there or 'none'}.")
    for cls in classes:
        first = next((f for f in sorted((other_dir / cls).iterdir()) if f.suffix.lower() in IMAGE_SUFFIXES), None)
        if first is not None:
            try:
                other_shape = _image_shape(first)
            except OSError as exc:
                raise CourseError(f"Cannot read the image {first}: {exc}. Remove or replace the file.") from exc
            if tuple(other_shape) != tuple(shape):
                raise CourseError(f"folder:{path}: the images of {split}/ have shape {tuple(shape)} (height, width"
                                  f"[, channels]) but {first} has {tuple(other_shape)}; give both splits one size and "
                                  "one colour mode.")
            return
