"""The setting of RUB's image-to-image benchmark (chapter 7): its budget, the checks of a request, the data and models.

:class:`I2IConfig` is the budget per profile; :func:`validate_i2i_request` and
:func:`check_request` reject a bad request before anything is trained or written;
:func:`prepare_i2i` loads the data, splits it into the forget set D_u and the retain set D_r by
class, and trains (or loads from the cache) the original inpainter and the evaluation classifier
C. The benchmark itself is :func:`course_lib.experiments.rub_inpainting.run_rub_i2i`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Sequence

import torch

from .. import data as data_mod
from ..attacks.uma_i2i import UNBOUNDED
from ..budgets import PROFILE_NAMES, Budget
from ..cache import cached_model
from ..config import get_device, seed_everything
from ..data import Dataset
from ..errors import CourseError, check_range
from ..evaluator import EvaluationClassifier, evaluation_classifier
from ..generation_metrics import FrechetReference, generation_scores
from ..models.inpainter import Inpainter, MaskSpec, build_inpainter, default_mask_for, hole_mse, train_inpainter
from ..unlearn import I2I_METHODS

DEFAULT_EPS = (0.0, 8 / 255, 16 / 255, UNBOUNDED)
DEFAULT_FORGET_CLASSES = (0, 1, 2, 3, 4)
DEFAULT_RETAIN_CLASSES = (5, 6, 7, 8, 9)


@dataclass(frozen=True)
class I2IConfig(Budget):
    """Budget of RUB's image-to-image benchmark per profile (sizes and counts; never the algorithm).

    Attributes
    ----------
    dataset:
        The profile's dataset (``digits``, ``mnist-5k``, ``cifar10``); a recipe may pass another.
    width, latent, epochs, lr, batch_size:
        The inpainter (:class:`~course_lib.models.inpainter.Inpainter`) and its training (Adam,
        linear decay); ``retrain`` uses the same schedule.
    hole, patch, patch_share:
        The mask (:class:`~course_lib.models.inpainter.MaskSpec`); ``hole`` / ``patch`` ``None``
        take :func:`~course_lib.models.inpainter.default_mask_for` the image side.
    eval_samples:
        How many forget and how many retain images (a fixed random choice of each) are inpainted,
        scored and attacked. FDs are compared between sets of this same size.
    uma_steps:
        Iterations of the attack (PGD steps; Adam steps for the unbounded radius).
    seeds:
        Unlearning seeds (0 .. seeds - 1).
    is_splits:
        Splits of the IS (the usual 10).
    """

    budget_name: ClassVar[str] = "rub-i2i"
    PROFILES: ClassVar[dict] = {
        "quick": dict(profile="quick", dataset="digits", width=16, latent=32, epochs=40, lr=3e-3,
                      eval_samples=150, uma_steps=20, seeds=1),
        "standard": dict(profile="standard", dataset="mnist-5k", width=16, latent=128, epochs=12, lr=3e-3,
                         eval_samples=200, uma_steps=20, seeds=1),
        "full": dict(profile="full", dataset="cifar10", width=32, latent=256, epochs=60, lr=2e-3,
                     eval_samples=2000, uma_steps=100, seeds=3),
    }

    profile: str = "standard"
    dataset: str = "mnist-5k"
    width: int = 16
    latent: int = 128
    epochs: int = 12
    lr: float = 3e-3
    batch_size: int = 64
    hole: int | None = None
    patch: int | None = None
    patch_share: float = 0.25
    eval_samples: int = 200
    uma_steps: int = 20
    seeds: int = 1
    is_splits: int = 10

    def check(self) -> None:
        if self.profile not in PROFILE_NAMES:
            raise CourseError(f"The I2I benchmark's profile must be one of {', '.join(PROFILE_NAMES)}; got {self.profile!r}.")
        for name in ("width", "latent", "epochs", "batch_size", "eval_samples", "uma_steps", "seeds", "is_splits"):
            if getattr(self, name) < 1:
                raise CourseError(f"The I2I benchmark's {name} must be at least 1; got {getattr(self, name)}.")
        if not self.lr > 0:
            raise CourseError(f"The inpainter's learning rate must be positive; got {self.lr}.")
        if self.eval_samples < self.is_splits:
            raise CourseError(f"eval_samples ({self.eval_samples}) must be at least is_splits ({self.is_splits}).")

    def mask_for(self, image_size: int) -> MaskSpec:
        """The mask of this budget for square images of ``image_size`` pixels."""
        base = default_mask_for(image_size)
        return MaskSpec(hole=base.hole if self.hole is None else self.hole,
                        patch=base.patch if self.patch is None else self.patch,
                        patch_share=self.patch_share).check(image_size)

    def schedule(self) -> dict:
        """The inpainter's training schedule (what ``retrain`` repeats on the retain images)."""
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size}


# --------------------------------------------------------------------------- checking a request

def validate_i2i_request(forget_classes: Sequence[int] | None, retain_classes: Sequence[int] | None,
                         eps: Sequence[float], methods: Sequence[str] | str,
                         num_classes: int | None = None, dataset: str = "the dataset") -> list[str]:
    """Check every user choice before anything is trained or written; return the method names.

    Raises :class:`CourseError` for an unknown or repeated method, an eps outside [0, 1]
    (1 = unbounded), an empty forget or retain class list, overlapping lists, or a class the
    dataset does not have (when ``num_classes`` is known).
    """
    names = I2I_METHODS.names() if methods in ("all", None) else list(methods)
    for n in names:
        I2I_METHODS.get(n)
    if len(set(names)) != len(names):
        raise CourseError(f"A method is listed twice in {names}.")
    if not eps:
        raise CourseError("Give at least one attack radius eps (0 means no attack, 'unbounded' no limit).")
    for e in eps:
        if not isinstance(e, (int, float)) or math.isnan(e):
            raise CourseError(f"eps must be a number or 'unbounded'; got {e!r}.")
        check_range(float(e), 0.0, 1.0, "eps (the L-inf radius on [0, 1] pixels, e.g. 8/255; 'unbounded' = 1)")
    forget_classes, retain_classes = list(forget_classes or []), list(retain_classes or [])
    if not forget_classes:
        raise CourseError("The forget class list is empty: choose at least one class to unlearn, e.g. 0,1,2,3,4.")
    if not retain_classes:
        raise CourseError("The retain class list is empty: keep at least one class, e.g. 5,6,7,8,9.")
    both = sorted(set(forget_classes) & set(retain_classes))
    if both:
        raise CourseError(f"Class(es) {both} are both forgotten and retained; a class belongs to one of the two lists.")
    if num_classes is not None:
        bad = sorted(c for c in forget_classes + retain_classes if not 0 <= int(c) < num_classes)
        if bad:
            raise CourseError(f"Unknown class(es) {bad}: {dataset} has classes 0..{num_classes - 1}.")
    return names


def check_request(dataset: str | None = None, *, profile: str | None = None,
                  forget_classes: Sequence[int] = DEFAULT_FORGET_CLASSES,
                  retain_classes: Sequence[int] = DEFAULT_RETAIN_CLASSES, eps: Sequence[float] = DEFAULT_EPS,
                  methods: Sequence[str] | str = "all") -> list[str]:
    """:func:`validate_i2i_request` against the dataset's classes (``dataset`` default: the profile's).

    Loads the training split's labels; trains and writes nothing (the CLI calls it first).
    """
    names = validate_i2i_request(forget_classes, retain_classes, eps, methods)
    dataset = dataset or I2IConfig.for_profile(profile).dataset
    train = data_mod.load(dataset, "train")
    validate_i2i_request(forget_classes, retain_classes, eps, methods, train.num_classes, dataset)
    return names


# --------------------------------------------------------------------------- the setting

@dataclass
class I2ISetup:
    """Everything the benchmark needs before any unlearning (chapter 7).

    ``forget`` / ``retain`` are D_u / D_r (training images of the forget / retain classes);
    ``forget_eval`` / ``retain_eval`` the images scored and attacked, with their fixed masks
    ``forget_mask`` / ``retain_mask`` ``(n, 1, H, W)``; ``forget_reference`` / ``retain_reference``
    hold C's features of those real images for the FD.
    """

    dataset: str
    config: I2IConfig
    train: Dataset
    forget: Dataset
    retain: Dataset
    forget_eval: Dataset
    retain_eval: Dataset
    forget_mask: torch.Tensor
    retain_mask: torch.Tensor
    original: Inpainter
    evaluator: EvaluationClassifier
    forget_reference: FrechetReference
    retain_reference: FrechetReference
    forget_classes: list[int]
    retain_classes: list[int]
    device: torch.device
    info: dict = field(default_factory=dict)

    def eval_set(self, split: str) -> tuple[Dataset, torch.Tensor, FrechetReference]:
        """``(images, masks, FD reference)`` of ``"F"`` (forget) or ``"R"`` (retain)."""
        if split == "F":
            return self.forget_eval, self.forget_mask, self.forget_reference
        if split == "R":
            return self.retain_eval, self.retain_mask, self.retain_reference
        raise CourseError(f"split must be 'F' (forget) or 'R' (retain); got {split!r}.")

    def score(self, outputs: torch.Tensor, split: str) -> dict:
        """FD, IS, C's accuracy and the hole MSE of inpainted ``outputs`` of the ``split`` images."""
        images, masks, reference = self.eval_set(split)
        scores = generation_scores(self.evaluator, outputs, images.y, reference, splits=self.config.is_splits)
        return {**scores, "hole_mse": float(hole_mse(outputs, images.x, masks).mean())}


def _class_subset(train: Dataset, classes: Sequence[int]) -> Dataset:
    return train.subset(torch.nonzero(torch.isin(train.y, torch.tensor(list(classes)))).flatten())


def _sample(data: Dataset, n: int, seed: int) -> Dataset:
    n = min(n, len(data))
    return data.subset(data_mod.sample_indices(data, n, seed=seed).sort().values)


def prepare_i2i(dataset: str | None = None, *, profile: str | None = None,
                forget_classes: Sequence[int] = DEFAULT_FORGET_CLASSES,
                retain_classes: Sequence[int] = DEFAULT_RETAIN_CLASSES, config: I2IConfig | None = None,
                train: Dataset | None = None, progress: bool = True) -> I2ISetup:
    """Load the data, split D_u / D_r, train (or load) the original inpainter and C; chapter 7.

    ``train``: the dataset's training split when the caller has loaded it already (else loaded here).
    """
    cfg = config or I2IConfig.for_profile(profile)
    dataset = dataset or cfg.dataset
    forget_classes, retain_classes = [int(c) for c in forget_classes], [int(c) for c in retain_classes]
    validate_i2i_request(forget_classes, retain_classes, [0.0], [])
    train = train if train is not None else data_mod.load(dataset, "train")
    validate_i2i_request(forget_classes, retain_classes, [0.0], [], train.num_classes, dataset)
    if train.kind != "image":
        raise CourseError(f"The inpainting benchmark needs images; {dataset} is {train.kind}.")
    forget, retain = _class_subset(train, forget_classes), _class_subset(train, retain_classes)
    if len(forget) < cfg.is_splits or len(retain) < cfg.is_splits:
        raise CourseError(f"{dataset} has {len(forget)} forget and {len(retain)} retain training images; "
                          f"each set needs at least {cfg.is_splits} (the IS splits).")
    device = get_device()
    spec = cfg.mask_for(int(train.input_shape[-1]))
    ocfg = {"stage": "i2i-original", "dataset": dataset, "n_train": len(train), "width": cfg.width,
            "latent": cfg.latent, "mask": spec.to_dict(), "seed": 0, **cfg.schedule()}

    def build() -> Inpainter:
        seed_everything(0)
        return build_inpainter(train.input_shape, width=cfg.width, latent=cfg.latent, mask_spec=spec).to(device)

    def fit(m: Inpainter) -> dict:
        return train_inpainter(m, train.x, seed=0, progress=progress, desc=f"train the inpainter on {dataset}",
                               **cfg.schedule())

    original, info, path = cached_model("i2i-original", ocfg, build, fit, data=(train,))
    original.eval()
    evaluator = evaluation_classifier(dataset, profile=cfg.profile, progress=progress)
    fe, re_ = _sample(forget, cfg.eval_samples, seed=0), _sample(retain, cfg.eval_samples, seed=0)
    h, w = train.input_shape[-2:]
    fm, rm = spec.fixed(len(fe), h, w, seed=1), spec.fixed(len(re_), h, w, seed=2)
    return I2ISetup(dataset, cfg, train, forget, retain, fe, re_, fm, rm, original, evaluator,
                    FrechetReference(evaluator, fe.x), FrechetReference(evaluator, re_.x), forget_classes,
                    retain_classes, device, {**info, "path": str(path), "evaluator_test_accuracy": evaluator.test_accuracy,
                                             "mask": spec.to_dict(), "mask_share": float(fm.mean())})
