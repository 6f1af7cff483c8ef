"""Device choice, seeding, the shared pipeline's budget and paths: the settings every chapter shares.

Profiles (``quick``, ``standard``, ``full``) and the budget system are described in
:mod:`course_lib.budgets`; this module holds the budget of the shared train -> fine-tune pipeline
(:class:`Profile`), which every chapter of the inversion paper uses.
"""
from __future__ import annotations

import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from .budgets import PROFILE_NAMES, Budget, profile_name  # noqa: F401  (re-exported: the profile names)
from .errors import CourseError


@dataclass(frozen=True)
class Profile(Budget):
    """Budget of the shared train -> fine-tune pipeline (Section 4.1 of the inversion paper).

    Attributes
    ----------
    name:
        ``"quick"``, ``"standard"`` or ``"full"``.
    pretrain_epochs:
        Epochs of pre-training M0 on the public split D0 (the paper uses 120).
    pretrain_lr:
        Initial SGD learning rate of pre-training, decayed linearly to 0 (paper: 0.1).
    pretrain_batch_size:
        Mini-batch size of pre-training (the paper does not state it: a course choice).
    pretrain_momentum, pretrain_weight_decay:
        SGD momentum and weight decay of pre-training. The paper states the weight decay, 5e-4,
        and the schedule (linear decay), not the momentum: 0.9, the common choice for these
        ConvNets, is a course choice.
    finetune_epochs:
        Epochs of fine-tuning M0 on the private split Du to get the deployed model M (paper: 1-3).
    finetune_lr:
        Learning rate of fine-tuning (paper: 1e-3).
    finetune_batch_size:
        Mini-batch size of fine-tuning (paper: 128).
    width:
        Width multiplier of the ConvNet / MLP (channels of the first block). Larger on a GPU.
    """

    budget_name: ClassVar[str] = "pipeline"
    PROFILES: ClassVar[dict] = {
        "quick": dict(name="quick", pretrain_epochs=4, pretrain_lr=0.05, pretrain_batch_size=64, width=16),
        "standard": dict(name="standard", pretrain_epochs=10, pretrain_lr=0.05, pretrain_batch_size=64, width=32),
        "full": dict(name="full", pretrain_epochs=120, pretrain_lr=0.1, pretrain_batch_size=128, width=64),
    }

    name: str = "standard"
    pretrain_epochs: int = 10
    pretrain_lr: float = 0.05
    pretrain_batch_size: int = 64
    pretrain_momentum: float = 0.9
    pretrain_weight_decay: float = 5e-4
    finetune_epochs: int = 1
    finetune_lr: float = 1e-3
    finetune_batch_size: int = 128
    width: int = 32

    def check(self) -> None:
        for field_name in ("pretrain_epochs", "pretrain_batch_size", "finetune_epochs", "finetune_batch_size", "width"):
            if getattr(self, field_name) < 1:
                raise CourseError(f"The pipeline's {field_name} must be at least 1; got {getattr(self, field_name)}.")
        if self.pretrain_lr <= 0 or self.finetune_lr <= 0:
            raise CourseError("The pipeline's learning rates must be positive.")


def get_profile(profile: str | Profile | None = None) -> Profile:
    """Return the pipeline budget :class:`Profile` of ``profile`` (default: the active profile).

    Raises
    ------
    CourseError
        If the name is not one of ``quick``, ``standard``, ``full``.
    """
    if isinstance(profile, Profile):
        return profile
    return Profile.for_profile(profile)


# --------------------------------------------------------------------------- device

def get_device(prefer: str | None = None) -> torch.device:
    """Pick the compute device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``COURSE_DEVICE`` environment variable) forces one, e.g. ``"cpu"``.
    """
    choice = (prefer or os.environ.get("COURSE_DEVICE", "")).strip().lower()
    if choice:
        return _checked_device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def _checked_device(choice: str) -> torch.device:
    """``torch.device(choice)`` if this machine has it, else a :class:`CourseError` saying what it has."""
    here = "cpu" + (f", cuda (0..{torch.cuda.device_count() - 1})" if torch.cuda.is_available() else "") + \
        (", mps" if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available() else "")
    try:
        device = torch.device(choice)
    except (RuntimeError, ValueError):
        raise CourseError(f"COURSE_DEVICE={choice!r} is not a device PyTorch knows. This machine has: {here}. "
                          "Unset COURSE_DEVICE to pick the best one automatically.") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise CourseError(f"COURSE_DEVICE={choice!r} asks for CUDA, but no CUDA GPU is visible to PyTorch. "
                              f"This machine has: {here}.")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise CourseError(f"COURSE_DEVICE={choice!r}: there is no GPU {device.index}; this machine has: {here}.")
    elif device.type == "mps":
        if getattr(torch.backends, "mps", None) is None or not torch.backends.mps.is_available():
            raise CourseError(f"COURSE_DEVICE={choice!r} asks for Apple's MPS, which this machine does not have. "
                              f"It has: {here}.")
    elif device.type != "cpu":
        raise CourseError(f"COURSE_DEVICE={choice!r}: the course runs on cpu, cuda or mps; this machine has: {here}.")
    return device


def describe_device(device: torch.device | None = None) -> str:
    """One line saying which device runs the course, with a hint on a CPU."""
    device = device or get_device()
    if device.type == "cuda":
        return f"Running on the GPU ({torch.cuda.get_device_name(device)}): the `full` profile is practical."
    if device.type == "mps":
        return "Running on Apple's MPS GPU backend."
    return ("Running on the CPU: `quick` and `standard` profiles are sized for it; "
            "a CUDA GPU makes the `full` profile (the papers' settings) practical.")


# --------------------------------------------------------------------------- seeding

def seed_everything(seed: int, deterministic: bool = True) -> torch.Generator:
    """Seed Python, NumPy and PyTorch; on the CPU also ask PyTorch for deterministic kernels.

    Returns a ``torch.Generator`` seeded with ``seed`` for code that wants its own stream.
    ``seed`` must be a whole number in [0, 2**63 - 1] (what torch accepts everywhere).
    """
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= int(seed) < 2 ** 63:
        raise CourseError(f"A seed is a whole number in [0, 2**63 - 1]; got {seed!r}.")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    if deterministic and not torch.cuda.is_available():
        torch.use_deterministic_algorithms(True, warn_only=True)
    gen = torch.Generator()
    gen.manual_seed(seed)
    return gen


# --------------------------------------------------------------------------- paths

def data_root() -> Path:
    """Where datasets and cached checkpoints live: ``COURSE_DATA_DIR``, else ``data/``.

    The default ``data/`` is the project's own folder when the package is installed from a
    checkout (editable install), else ``./data`` under the current directory.
    """
    env = os.environ.get("COURSE_DATA_DIR", "").strip()
    if env:
        root = Path(env).expanduser()
    else:
        project = Path(__file__).resolve().parent.parent
        root = project / "data" if (project / "pyproject.toml").exists() else Path.cwd() / "data"
    if root.exists() and not root.is_dir():
        raise CourseError(f"The data root {root} is a file, not a folder. Point COURSE_DATA_DIR at a folder "
                          "(it is created if missing) or unset it.")
    return root


def cache_dir() -> Path:
    """Folder of cached trained models (``<data root>/cache``)."""
    return data_root() / "cache"


def results_dir(name: str | None = None) -> Path:
    """Where recipes and commands write results: ``COURSE_RESULTS_DIR``, else ``results/`` here.

    ``name`` is one recipe's folder under that root (``results_dir("rub")``). The default is
    relative to the current directory, so a notebook writes beside itself. ``make test`` points
    the unit tests and the chapters at one fresh root, so a chapter reads the benchmark rows that
    the tests computed with its exact configuration instead of computing them again.
    """
    env = os.environ.get("COURSE_RESULTS_DIR", "").strip()
    root = Path(env).expanduser() if env else Path("results")
    return root / name if name else root  # checked where it is written (results.prepare_output)
