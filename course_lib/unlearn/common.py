"""Helpers the classification unlearning methods share: a training loop, labels, fingerprints (chapter 5)."""
from __future__ import annotations


import torch
from torch import nn

from ..data import Dataset


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def forget_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` (switched to eval mode) on ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``.

    The stopping check of GA and IU: both stop once the forget set is forgotten.
    """
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def random_wrong_labels(y: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """For each label in ``y`` (N,), a uniformly random *different* class (N,), deterministic per seed."""
    gen = torch.Generator().manual_seed(int(seed))
    shift = torch.randint(1, num_classes, y.shape, generator=gen)
    return (y + shift) % num_classes


def concat(a: Dataset, b: Dataset) -> Dataset:
    return Dataset(a.name, torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), list(a.classes), a.kind,
                   list(a.feature_names))


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Reset every layer's parameters (``reset_parameters``) with ``seed``: a fresh, untrained copy."""
    torch.manual_seed(int(seed))
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model
