"""Gradient ascent (GA) for classification unlearning (chapter 5): an addition of the course.

``GA`` ascends the forget set's cross-entropy (Thudi et al., 2022), on the classifier head by
default. GA is not one of RUB's six classification methods; chapter 5 reports it as an extra.
"""
from __future__ import annotations

import torch
from torch import nn

from ..cache import clone_model
from ..config import seed_everything
from ..data import Dataset
from ..train import train_model
from ..errors import check_choice
from ..models import classifier_head
from ..train import set_bn_mode as _set_bn  # frozen or live batch-norm statistics
from .common import forget_accuracy, model_device
from .registry import CLASSIFICATION_METHODS


class _StopTraining(Exception):
    pass


def _land_on_threshold(model: nn.Module, before: list[torch.Tensor], x: torch.Tensor, y: torch.Tensor,
                       stop_accuracy: float, steps: int) -> None:
    """Move ``model`` back along its last step to the first point where forget accuracy <= ``stop_accuracy``.

    ``before`` holds the parameters before the step (forget accuracy above the threshold), the
    model's current parameters the ones after it (at or below the threshold). ``steps`` rounds of
    bisection on the fraction t of the step; the model ends at the smallest t found that still
    meets the threshold.
    """
    params = list(model.parameters())
    after = [p.detach().clone() for p in params]

    def set_to(t: float) -> None:
        with torch.no_grad():
            for p, b, a in zip(params, before, after):
                p.copy_(b + t * (a - b))

    lo, hi = 0.0, 1.0
    for _ in range(steps):
        mid = (lo + hi) / 2
        set_to(mid)
        if forget_accuracy(model, x, y) <= stop_accuracy:
            hi = mid
        else:
            lo = mid
    set_to(hi)


@CLASSIFICATION_METHODS.register("GA", description="gradient ascent on the forget set (classifier head by default)")
def gradient_ascent(original: nn.Module, forget: Dataset, retain: Dataset, *, epochs: int = 5, lr: float = 0.01,
                    batch_size: int = 64, momentum: float = 0.9, weight_decay: float = 0.0,
                    layers: str = "head", stop_accuracy: float | None = None, landing_steps: int = 10,
                    seed: int = 0, progress: bool = False) -> nn.Module:
    """GA: maximise the cross-entropy on D_u (SGD on its negative); batch-norm statistics frozen.

    Parameters
    ----------
    layers:
        ``"head"`` (default) ascends on the classifier head only (:func:`classifier_head`, the last
        linear layer); ``"all"`` on every parameter. Ascending through every layer pushes the
        feature extractor that the other classes share around and costs test accuracy; the head
        alone forgets and keeps it (``benchmarks/rub_speed.py`` and chapter 5 measure both).
    epochs, lr:
        The fixed recipe (default): ``epochs`` epochs of SGD at ``lr`` on the forget set, whatever
        the forget accuracy does on the way; UA is then a measurement. GA is not one of RUB's
        methods (chapter 5 runs it as an extra); 5 epochs at 0.01 is a course choice for the
        mnist-5k ConvNet: on its head the forget accuracy falls off a cliff between 4 epochs
        (above 90 %) and 5 (near 0 %), with momentum carrying the last steps, and 10 epochs
        ruin every class.
    stop_accuracy:
        The adaptive landing (an addition of the course, off by default; ``RubConfig(landing=0.08)``
        switches it on in the benchmark). Plain gradient ascent has no natural end: pushed too far
        it wrecks every class. With ``stop_accuracy`` set, it stops after the first step at which
        the model's accuracy on the forget set has fallen to that level (checked after every step,
        in eval mode), and then bisects that last step (``landing_steps`` rounds) back to the first
        point at which the level is met: one momentum step can otherwise carry the forget accuracy
        from 99 % to 0 %. UA is then that target, not a measurement.
    """
    check_choice(layers, ("head", "all"), "GA layers")
    seed_everything(seed)
    model = clone_model(original)
    if layers == "head":
        head = {id(p) for p in classifier_head(model).parameters()}
        for p in model.parameters():
            p.requires_grad_(id(p) in head)
    device = model_device(model)
    xf, yf = forget.x.to(device), forget.y.to(device)
    before = [p.detach().clone() for p in model.parameters()]

    def check(m: nn.Module) -> None:
        if stop_accuracy is None:
            return
        if forget_accuracy(m, xf, yf) <= stop_accuracy:
            _land_on_threshold(m, before, xf, yf, stop_accuracy, landing_steps)
            raise _StopTraining
        _set_bn(m, "eval")
        with torch.no_grad():
            for b, p in zip(before, m.parameters()):
                b.copy_(p)

    try:
        train_model(model, forget, epochs=epochs, lr=lr, batch_size=batch_size, momentum=momentum,
                    weight_decay=weight_decay, schedule="constant", seed=seed, sign=-1.0, bn_mode="eval",
                    after_step=check, progress=progress, desc="GA")
    except _StopTraining:
        pass
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    model.eval()
    return model
