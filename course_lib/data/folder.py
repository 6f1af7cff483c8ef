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
    x = _images(stack, channels_last=stack.ndim == 4)
    return Dataset(f"folder:{path}", x, torch.from_numpy(labels_np), classes)
