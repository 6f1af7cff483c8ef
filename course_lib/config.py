"""Device choice, seeding, profiles and paths: the settings every chapter shares.

Profiles
--------
The course runs the *same* algorithms at three budgets:

``quick``
    CI on a 2-core CPU: every chapter in well under two minutes.
``standard``
    A learner's laptop CPU: a few minutes per chapter, large enough to show the papers' effects.
``full``
    A GPU: the papers' settings (120 pre-training epochs, many restarts and iterations).

A profile changes sizes and iteration counts, never the algorithm. This module holds the
settings of the shared training pipeline (:class:`Profile`); each attack or benchmark keeps its
own budget table next to its code (for example ``InversionConfig.for_profile``), keyed by the
same three names.

The profile is chosen by an explicit argument, else the ``COURSE_PROFILE`` environment
variable, else ``full`` when a CUDA GPU is present and ``standard`` otherwise.
"""
from __future__ import annotations

import os
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import CourseError

PROFILE_NAMES = ("quick", "standard", "full")


@dataclass(frozen=True)
class Profile:
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
        Mini-batch size of pre-training.
    finetune_epochs:
        Epochs of fine-tuning M0 on the private split Du to get the deployed model M (paper: 1-3).
    finetune_lr:
        Learning rate of fine-tuning (paper: 1e-3).
    finetune_batch_size:
        Mini-batch size of fine-tuning (paper: 128).
    width:
        Width multiplier of the ConvNet / MLP (channels of the first block). Larger on a GPU.
    """

    name: str
    pretrain_epochs: int
    pretrain_lr: float
    pretrain_batch_size: int
    finetune_epochs: int
    finetune_lr: float
    finetune_batch_size: int
    width: int

    def to_dict(self) -> dict:
        return asdict(self)


PROFILES: dict[str, Profile] = {
    "quick": Profile("quick", pretrain_epochs=4, pretrain_lr=0.05, pretrain_batch_size=64,
                     finetune_epochs=1, finetune_lr=1e-3, finetune_batch_size=128, width=16),
    "standard": Profile("standard", pretrain_epochs=10, pretrain_lr=0.05, pretrain_batch_size=64,
                        finetune_epochs=1, finetune_lr=1e-3, finetune_batch_size=128, width=32),
    "full": Profile("full", pretrain_epochs=120, pretrain_lr=0.1, pretrain_batch_size=128,
                    finetune_epochs=1, finetune_lr=1e-3, finetune_batch_size=128, width=64),
}


def default_profile_name() -> str:
    """``COURSE_PROFILE`` if set, else ``full`` on a CUDA GPU and ``standard`` on a CPU."""
    env = os.environ.get("COURSE_PROFILE", "").strip().lower()
    if env:
        return env
    return "full" if torch.cuda.is_available() else "standard"


def get_profile(profile: str | Profile | None = None) -> Profile:
    """Return the :class:`Profile` named by ``profile`` (or the default, see module docstring).

    Raises
    ------
    CourseError
        If the name is not one of ``quick``, ``standard``, ``full``.
    """
    if isinstance(profile, Profile):
        return profile
    name = (profile or default_profile_name()).strip().lower()
    if name not in PROFILES:
        raise CourseError(
            f"Unknown profile {name!r}. Choose one of {', '.join(PROFILE_NAMES)} "
            "(set it with --profile or the COURSE_PROFILE environment variable)."
        )
    return PROFILES[name]


def profile_name(profile: str | Profile | None = None) -> str:
    """The name of the profile that ``get_profile(profile)`` resolves to."""
    return get_profile(profile).name


# --------------------------------------------------------------------------- device

def get_device(prefer: str | None = None) -> torch.device:
    """Pick the compute device: CUDA, then Apple's MPS, then the CPU.

    ``prefer`` (or the ``COURSE_DEVICE`` environment variable) forces one, e.g. ``"cpu"``.
    """
    choice = (prefer or os.environ.get("COURSE_DEVICE", "")).strip().lower()
    if choice:
        if choice.startswith("cuda") and not torch.cuda.is_available():
            raise CourseError("COURSE_DEVICE asks for CUDA, but no CUDA GPU is visible to PyTorch.")
        return torch.device(choice)
    if torch.cuda.is_available():
        return torch.device("cuda")
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


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
    """
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
    return root


def merge_overrides(config_cls, settings: dict, overrides: dict, what: str) -> dict:
    """``settings`` updated with the ``overrides`` that are not ``None`` (so CLI arguments pass through).

    Raises :class:`CourseError` naming any override that is not a field of the dataclass
    ``config_cls``; ``what`` names the configuration in that message. Used by every
    ``*Config.for_profile``.
    """
    unknown = set(overrides) - set(config_cls.__dataclass_fields__)
    if unknown:
        raise CourseError(f"Unknown {what} setting(s): {', '.join(sorted(unknown))}.")
    return {**settings, **{k: v for k, v in overrides.items() if v is not None}}


def cache_dir() -> Path:
    """Folder of cached trained models (``<data root>/cache``)."""
    return data_root() / "cache"
