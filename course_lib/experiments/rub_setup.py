"""RUB's classification setting (chapter 5): the budget, the data split, the original model, the checks.

:class:`RubConfig` sizes the benchmark per profile; :func:`prepare_rub` loads the data, splits the
forget set D_u from the retain set D_r and trains (or loads from the cache) the original model f on
the whole training split; :func:`validate_request` checks a user's choices before anything runs.
:mod:`course_lib.experiments.rub_classification` runs the benchmark on this setting.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch
from torch import nn

from .. import data as data_mod
from ..attacks.membership import ShadowMIA, fit_shadow_mia, shadow_halves
from ..budgets import Budget
from ..cache import cached_model
from ..config import get_device, seed_everything
from ..data import Dataset
from ..errors import CourseError, check_range
from ..models import MODELS, build_model, default_model_for
from ..train import accuracy, train_model
from ..unlearn import CLASSIFICATION_METHODS
from .rub_result import RUB_METHODS  # noqa: F401 (re-exported)

DEFAULT_EPS = (0.0, 8 / 255, 16 / 255)
#: The methods that take the adaptive landing (``stop_accuracy``), an addition of the course.
LANDING_METHODS = ("GA", "IU")


@dataclass(frozen=True)
class RubConfig(Budget):
    """Budget of the RUB benchmark per profile (the algorithm never changes, only sizes).

    Attributes
    ----------
    width, epochs, lr, batch_size:
        The original model's training (SGD, momentum 0.9, weight decay 5e-4, linear decay);
        ``retrain`` uses the same schedule.
    shadow_epochs:
        Epochs of each shadow model on its half of the test split (500 samples on mnist-5k):
        more epochs than the original's, so that it takes a comparable number of SGD steps and
        becomes about as confident on its members as the target is on its own.
    attack_samples:
        How many forget samples (a fixed random choice) UA, MIA and UMA are evaluated on
        (``None``: all of them).
    uma_steps:
        PGD iterations of the Unlearning Mapping Attack.
    seeds, mia_seeds:
        Unlearning seeds and MIA seeds (RUB: 10 x 5).
    eps1, eps2:
        Margins of eq. (1) / Proposition 4 on the total-variation distance between the unlearned
        and the original model's outputs (0..1): forgetting needs E_{D_u} > eps1, utility
        E_{D_r} <= eps2; a forget sample is "mapped back" when UMA brings it within eps1.
    preferred_dataset:
        The dataset chapter 5 uses at this budget when it is on disk (``full``: RUB's CIFAR-10),
        see :meth:`dataset`.
    landing:
        The adaptive landing (an addition of the course, off by default): ``None`` runs every
        method with its fixed hyper-parameters, so UA before the attack is a measurement; a
        forget accuracy such as ``0.08`` makes GA and IU (:data:`LANDING_METHODS`) lengthen or
        stop their step until the forget set's accuracy falls to it, so their UA is that target.
    """

    profile: str = "standard"
    width: int = 16
    epochs: int = 6
    lr: float = 0.05
    batch_size: int = 64
    shadow_epochs: int = 24
    attack_samples: int | None = 300
    uma_steps: int = 20
    seeds: int = 3
    mia_seeds: int = 2
    eps1: float = 0.5
    eps2: float = 0.1
    preferred_dataset: str | None = None
    landing: float | None = None

    budget_name: ClassVar[str] = "rub"
    # quick and standard share the original model (same width and epochs), so the cached
    # checkpoint is reused and the methods' defaults, tuned on it, hold in both
    PROFILES: ClassVar[dict] = {
        "quick": dict(profile="quick", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                      attack_samples=100, uma_steps=10, seeds=1, mia_seeds=1),
        "standard": dict(profile="standard", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                         attack_samples=300, uma_steps=20, seeds=3, mia_seeds=2),
        "full": dict(profile="full", width=32, epochs=30, lr=0.05, batch_size=64, shadow_epochs=120,
                     attack_samples=None, uma_steps=50, seeds=10, mia_seeds=5, preferred_dataset="cifar10"),
    }

    def dataset(self) -> str:
        """The chapter's dataset at this budget: ``preferred_dataset`` when it is on disk, else ``mnist-5k``."""
        from ..data import is_available

        if self.preferred_dataset and is_available(self.preferred_dataset)[0]:
            return self.preferred_dataset
        return "mnist-5k"

    def check(self) -> None:
        for name in ("width", "epochs", "batch_size", "shadow_epochs", "uma_steps", "seeds", "mia_seeds"):
            if getattr(self, name) < 1:
                raise CourseError(f"RUB's {name} must be at least 1; got {getattr(self, name)}.")
        if self.attack_samples is not None and self.attack_samples < 1:
            raise CourseError(f"attack_samples must be at least 1 (or None: all); got {self.attack_samples}.")
        check_range(self.eps1, 0.0, 1.0, "eps1")
        check_range(self.eps2, 0.0, 1.0, "eps2")
        if self.landing is not None:
            check_range(self.landing, 0.0, 1.0, "landing (the forget accuracy GA and IU stop at)", high_open=True)

    def method_options(self, method: str) -> dict:
        """The hyper-parameters this budget adds to ``method``: the landing's ``stop_accuracy`` for GA and IU."""
        return {"stop_accuracy": self.landing} if self.landing is not None and method in LANDING_METHODS else {}


# --------------------------------------------------------------------------- the setting

@dataclass
class RubSetup:
    """Everything the benchmark needs before any unlearning: data split, original model, MIA pools.

    ``forget`` / ``retain`` are D_u / D_r (training split); ``test_eval`` is the test split used for
    TA (the retained classes only under class-wise forgetting); ``forget_eval`` holds the forget
    samples UA, MIA and UMA are measured on.
    """

    dataset: str
    model_name: str
    config: RubConfig
    train: Dataset
    test: Dataset
    forget: Dataset
    retain: Dataset
    forget_eval: Dataset
    test_eval: Dataset
    original: nn.Module
    forget_classes: list[int]
    forget_share: float | None
    device: torch.device
    original_info: dict = field(default_factory=dict)
    _shadows: dict = field(default_factory=dict)

    def train_schedule(self) -> dict:
        c = self.config
        return {"epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size, "momentum": 0.9,
                "weight_decay": 5e-4, "schedule": "linear"}

    def new_model(self) -> nn.Module:
        return build_model(self.model_name, self.train.input_shape, self.train.num_classes,
                           width=self.config.width).to(self.device)

    def shadow_mia(self, mia_seed: int, progress: bool = False) -> ShadowMIA:
        """The shadow-model MIA for ``mia_seed`` (shadow model cached on disk, attack fitted once)."""
        if mia_seed in self._shadows:
            return self._shadows[mia_seed]
        members, non_members = shadow_halves(self.test, seed=mia_seed)
        sched = {**self.train_schedule(), "epochs": self.config.shadow_epochs}
        cfg = {"stage": "rub-shadow", "dataset": self.dataset, "model": self.model_name,
               "width": self.config.width, **sched, "mia_seed": mia_seed, "n_members": len(members)}

        def build() -> nn.Module:
            seed_everything(1000 + mia_seed)
            return self.new_model()

        def fit(m: nn.Module) -> dict:
            train_model(m, members, seed=1000 + mia_seed, progress=progress, desc="shadow model",
                        **sched)
            return {"member_accuracy": accuracy(m, members), "non_member_accuracy": accuracy(m, non_members)}

        shadow, _, _ = cached_model("rub-shadow", cfg, build, fit, data=(members,))
        mia = fit_shadow_mia(shadow, members, non_members, seed=mia_seed)
        self._shadows[mia_seed] = mia
        return mia


def _forget_indices(train: Dataset, forget_classes: Sequence[int], forget_share: float | None) -> torch.Tensor:
    if forget_share is not None:
        n = max(1, int(round(forget_share * len(train))))
        return data_mod.sample_indices(train, n, seed=0).sort().values
    mask = torch.zeros(len(train), dtype=torch.bool)
    for c in forget_classes:
        mask |= train.y == int(c)
    return torch.nonzero(mask).flatten()


def validate_request(dataset: str, forget_classes: Sequence[int] | None, forget_share: float | None,
                     eps: Sequence[float], methods: Sequence[str] | str, num_classes: int | None = None) -> list[str]:
    """Check every user choice before anything is trained or written; return the method names.

    Raises :class:`CourseError` for an unknown method, an eps outside [0, 1], a forget class the
    dataset does not have, or both / neither of class-wise and random forgetting.
    """
    names = CLASSIFICATION_METHODS.names() if methods in ("all", None) else list(methods)
    for n in names:
        CLASSIFICATION_METHODS.get(n)
    if len(set(names)) != len(names):
        raise CourseError(f"A method is listed twice in {names}.")
    if not eps:
        raise CourseError("Give at least one attack radius eps (0 means no attack).")
    for e in eps:
        if not isinstance(e, (int, float)) or math.isnan(e):
            raise CourseError(f"eps must be a number; got {e!r}.")
        check_range(float(e), 0.0, 1.0, "eps (L-inf radius on [0, 1] pixels, e.g. 8/255)")
    if forget_share is not None and forget_classes:
        raise CourseError("Choose class-wise forgetting (forget classes) or random forgetting (a forget share), not both.")
    if forget_share is not None:
        check_range(float(forget_share), 0.0, 1.0, "forget share", low_open=True, high_open=True)
    elif not forget_classes:
        raise CourseError("Choose which classes to forget (e.g. --forget-classes 0) or a forget share.")
    if num_classes is not None and forget_classes:
        bad = [c for c in forget_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise CourseError(f"Unknown forget class(es) {bad}: {dataset} has classes 0..{num_classes - 1}.")
        if len(set(int(c) for c in forget_classes)) >= num_classes:
            raise CourseError("Cannot forget every class: keep at least one class to measure test accuracy on.")
    return names


def prepare_rub(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                forget_classes: Sequence[int] | None = (0,), forget_share: float | None = None,
                config: RubConfig | None = None, progress: bool = True) -> RubSetup:
    """Load the data, split D_u / D_r and train (or load from cache) the original model; chapter 5."""
    cfg = config or RubConfig.for_profile(profile)
    forget_classes = [] if forget_share is not None else [int(c) for c in (forget_classes or [])]
    train = data_mod.load(dataset, "train")
    test = data_mod.load(dataset, "test")
    validate_request(dataset, forget_classes, forget_share, [0.0], [], train.num_classes)
    model_name = model or default_model_for(train.kind)
    MODELS.get(model_name)
    device = get_device()
    idx = _forget_indices(train, forget_classes, forget_share)
    forget, retain = train.subset(idx), train.without(idx)
    if len(retain) == 0:
        raise CourseError("The retain set is empty; forget fewer samples.")
    n_eval = len(forget) if cfg.attack_samples is None else min(cfg.attack_samples, len(forget))
    forget_eval = forget.subset(data_mod.sample_indices(forget, n_eval, seed=0).sort().values)
    if forget_classes:
        keep = torch.ones(len(test), dtype=torch.bool)
        for c in forget_classes:
            keep &= test.y != c
        test_eval = test.subset(torch.nonzero(keep).flatten())
    else:
        test_eval = test
    sched = {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "momentum": 0.9,
             "weight_decay": 5e-4, "schedule": "linear"}
    ocfg = {"stage": "rub-original", "dataset": dataset, "model": model_name, "width": cfg.width,
            "seed": 0, "n_train": len(train), **sched}

    def build() -> nn.Module:
        seed_everything(0)
        return build_model(model_name, train.input_shape, train.num_classes, width=cfg.width).to(device)

    def fit(m: nn.Module) -> dict:
        t0 = time.perf_counter()
        train_model(m, train, seed=0, progress=progress, desc=f"train the original model on {dataset}", **sched)
        return {"test_accuracy": accuracy(m, test), "train_seconds": time.perf_counter() - t0}

    original, info, path = cached_model("rub-original", ocfg, build, fit, data=(train,))
    original.eval()
    return RubSetup(dataset, model_name, cfg, train, test, forget, retain, forget_eval, test_eval, original,
                    forget_classes, forget_share, device, {**info, "path": str(path)})
