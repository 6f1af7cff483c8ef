"""Datasets: shapes, ranges, class counts, split determinism, clear errors."""
import shutil
import tarfile
from pathlib import Path

import pytest
import torch

from course_lib import data
from course_lib.errors import CourseError, DatasetNotAvailableError

SHARED_CIFAR = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "cifar10-imagefolder.tar.gz"


def test_mnist5k_shapes_ranges_and_counts():
    train, test = data.load("mnist-5k", "train"), data.load("mnist-5k", "test")
    assert train.x.shape == (4000, 1, 28, 28) and test.x.shape == (1000, 1, 28, 28)
    assert train.x.dtype == torch.float32 and train.y.dtype == torch.int64
    assert 0.0 <= float(train.x.min()) and float(train.x.max()) <= 1.0
    assert float(train.x.max()) > 0.99  # real digits use the full range
    assert train.num_classes == 10 and min(train.class_counts()) >= 300
    assert sum(test.class_counts()) == 1000


def test_digits_and_german_credit():
    digits = data.load("digits", "train")
    assert digits.input_shape == (1, 8, 8) and digits.num_classes == 10
    tr, te = data.load("german-credit", "train"), data.load("german-credit", "test")
    assert len(tr) + len(te) == 1000
    assert tr.kind == "tabular" and tr.input_shape == (20,) and len(tr.feature_names) == 20
    x = torch.cat([tr.x, te.x])
    assert float(x.min()) == 0.0 and float(x.max()) == 1.0
    # every feature is min-max scaled over the whole table: each column reaches 0 and 1
    assert torch.allclose(x.min(0).values, torch.zeros(20)) and torch.allclose(x.max(0).values, torch.ones(20))
    assert tr.classes == ["good", "bad"] and set(tr.y.tolist()) == {0, 1}
    assert 0.25 < float(torch.cat([tr.y, te.y]).float().mean()) < 0.35  # 300 of 1,000 are bad


def test_public_private_split_is_deterministic_and_disjoint():
    train = data.load("mnist-5k", "train")
    d0, du = data.split_public_private(train, seed=3)
    d0b, dub = data.split_public_private(train, seed=3)
    d0c, _ = data.split_public_private(train, seed=4)
    assert len(d0) == 3200 and len(du) == 800
    assert torch.equal(d0.x, d0b.x) and torch.equal(du.y, dub.y)
    assert not torch.equal(d0.x, d0c.x)
    # disjoint and covering: no image of Du appears in D0
    flat0 = {tuple(r.tolist()) for r in (d0.x.flatten(1) * 255).round().to(torch.int16)[:, ::7]}
    assert not any(tuple(r.tolist()) in flat0 for r in (du.x.flatten(1) * 255).round().to(torch.int16)[:50, ::7])


def test_limit_keeps_every_class():
    small = data.load("mnist-5k", "train", limit=50)
    assert len(small) == 50 and min(small.class_counts()) == 5


def test_unknown_dataset_and_split_are_clear_errors():
    with pytest.raises(CourseError, match="Unknown dataset"):
        data.load("imagenet-21k")
    with pytest.raises(CourseError, match="split"):
        data.load("mnist-5k", "validation")


@pytest.mark.parametrize("name", ["cifar10", "stl10", "pneumonia", "mnist", "cifar100"])
def test_absent_downloadable_dataset_names_the_fetch_command(tmp_path, name):
    with pytest.raises(DatasetNotAvailableError, match=f"course-lib data download {name}"):
        data.load(name, "train", root=tmp_path)


def test_folder_dataset_errors(tmp_path):
    with pytest.raises(DatasetNotAvailableError):
        data.load(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "train").mkdir()
    with pytest.raises(CourseError, match="class sub-folders"):
        data.load(f"folder:{tmp_path}")


def test_folder_reads_an_imagefolder_tree(tmp_path):
    from PIL import Image

    for split in ("train", "test"):
        for c, value in (("cat", 0), ("dog", 255)):
            d = tmp_path / split / c
            d.mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (12, 10), (value, value, value)).save(d / f"{i}.png")
    ds = data.load(f"folder:{tmp_path}", "train")
    assert ds.x.shape == (6, 3, 10, 12) and ds.classes == ["cat", "dog"]
    assert float(ds.x[ds.y == 1].min()) == 1.0 and float(ds.x[ds.y == 0].max()) == 0.0


@pytest.mark.skipif(not SHARED_CIFAR.exists(), reason="shared CIFAR-10 copy absent")
def test_folder_loads_shared_cifar10(tmp_path):
    with tarfile.open(SHARED_CIFAR) as tar:
        members = [m for m in tar.getmembers()
                   if m.isdir() or "/test/" in m.name and m.name.rsplit("/", 1)[-1] < "0030"]
        tar.extractall(tmp_path, members=members)
    root = next(p.parent for p in tmp_path.rglob("test") if p.is_dir())
    shutil.copytree(root / "test", root / "train", dirs_exist_ok=True)
    ds = data.load(f"folder:{root}", "test")
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10
    assert "airplane" in ds.classes and "truck" in ds.classes
    assert 0.0 <= float(ds.x.min()) and float(ds.x.max()) <= 1.0 and float(ds.x.std()) > 0.1
