"""A classifier the course trains to judge generated images, where the papers use pretrained nets.

RUB scores image-to-image unlearning with the Inception Score and the Fréchet *Inception*
Distance, and text-to-image unlearning with a pretrained classifier that decides whether a
generated image shows the erased concept (UnlearnDiffAtk). Pretrained Inception or CLIP weights
cannot be downloaded here, so the generative chapters use an **evaluation classifier** C that the
course trains on the real images of the same dataset (the precedent: Li et al. score Places
images with a Places-trained ResNet-50). Its class probabilities give an IS, its penultimate
features a Fréchet distance; both are named for what they are ("FD / IS of the course's
classifier"), never "FID".

:func:`evaluation_classifier` trains (or loads from the cache) C at the image size the chapter
generates at; :func:`downsample` brings a dataset to that size (area interpolation).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from . import data as data_mod
from .budgets import Budget
from .cache import cached_model
from .config import get_device, seed_everything
from .data import Dataset
from .errors import CourseError
from .models import build_model, classifier_head
from .train import accuracy, train_model


@dataclass(frozen=True)
class EvaluatorBudget(Budget):
    """Training of the evaluation classifier C of the generative chapters (ConvNet, SGD, linear decay)."""

    budget_name: ClassVar[str] = "evaluator"
    PROFILES: ClassVar[dict] = {"quick": dict(epochs=6), "standard": dict(epochs=8),
                                "full": dict(epochs=30, width=32)}

    model: str = "convnet"
    width: int = 16
    epochs: int = 8
    lr: float = 0.05
    batch_size: int = 64

    def check(self) -> None:
        for name in ("width", "epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise CourseError(f"The evaluator's {name} must be at least 1; got {getattr(self, name)}.")


def downsample(dataset: Dataset, size: int | None) -> Dataset:
    """``dataset`` with its images resized to ``size`` x ``size`` (area interpolation); ``None`` keeps them."""
    if size is None or tuple(dataset.input_shape[-2:]) == (size, size):
        return dataset
    if dataset.kind != "image":
        raise CourseError(f"Only image datasets can be resized; {dataset.name} is {dataset.kind}.")
    if not isinstance(size, int) or size < 4:
        raise CourseError(f"The image size must be a whole number >= 4; got {size!r}.")
    x = F.interpolate(dataset.x, size=(size, size), mode="area").clamp(0, 1)
    return Dataset(dataset.name, x, dataset.y.clone(), list(dataset.classes), dataset.kind)


@dataclass
class EvaluationClassifier:
    """C: a classifier of real images, used to judge generated ones.

    Attributes
    ----------
    model:
        The trained classifier (eval mode); inputs ``(N, C, size, size)`` in [0, 1].
    dataset, size:
        What it was trained on: the dataset name and the image side.
    test_accuracy:
        Its accuracy on the real test split (0..1): report it beside every score it gives.
    """

    model: nn.Module
    dataset: str
    size: int
    test_accuracy: float
    info: dict = field(default_factory=dict)

    @torch.no_grad()
    def probs(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Class probabilities ``(N, K)`` of images ``x`` ``(N, C, H, W)``."""
        device = next(self.model.parameters()).device
        out = [F.softmax(self.model(x[i:i + batch_size].to(device).float()), 1).cpu()
               for i in range(0, len(x), batch_size)]
        return torch.cat(out) if out else torch.zeros(0, self.model(torch.zeros(1, *x.shape[1:], device=device)).shape[1])

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Predicted labels ``(N,)``."""
        return self.probs(x).argmax(1)

    @torch.no_grad()
    def features(self, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
        """Penultimate features ``(N, D)`` (the input of the classifier head), float64."""
        head = classifier_head(self.model)
        captured = []
        handle = head.register_forward_hook(lambda _m, inp, _out: captured.append(inp[0].detach().cpu()))
        device = next(self.model.parameters()).device
        try:
            for i in range(0, len(x), batch_size):
                self.model(x[i:i + batch_size].to(device).float())
        finally:
            handle.remove()
        return torch.cat(captured).double() if captured else torch.zeros(0, head.in_features, dtype=torch.float64)


def evaluation_classifier(dataset: str = "mnist-5k", *, size: int | None = None, profile: str | None = None,
                          budget: EvaluatorBudget | None = None, progress: bool = True) -> EvaluationClassifier:
    """Train (or load from the cache) the evaluation classifier C of ``dataset`` at ``size`` pixels.

    Used by the generative RUB chapters (inpainting and diffusion). ``size=None`` keeps the
    dataset's resolution.
    """
    cfg = budget or EvaluatorBudget.for_profile(profile)
    train = downsample(data_mod.load(dataset, "train"), size)
    test = downsample(data_mod.load(dataset, "test"), size)
    if train.kind != "image":
        raise CourseError(f"The evaluation classifier judges images; {dataset} is {train.kind}.")
    device = get_device()
    side = int(train.input_shape[-1])
    key = {"stage": "evaluator", "dataset": dataset, "size": side, "n_train": len(train), **cfg.to_dict()}

    def build() -> nn.Module:
        seed_everything(0)
        return build_model(cfg.model, train.input_shape, train.num_classes, width=cfg.width).to(device)

    def fit(m: nn.Module) -> dict:
        t0 = time.perf_counter()
        train_model(m, train, epochs=cfg.epochs, lr=cfg.lr, batch_size=cfg.batch_size, seed=0,
                    progress=progress, desc=f"train the evaluation classifier on {dataset} ({side}x{side})")
        return {"train_seconds": time.perf_counter() - t0}

    model, info, path = cached_model("evaluator", key, build, fit, data=(train,))
    model.eval()
    # measured from the weights that were loaded, never read back from the sidecar
    test_acc = accuracy(model, test)
    return EvaluationClassifier(model, dataset, side, test_acc, {**info, "path": str(path)})
