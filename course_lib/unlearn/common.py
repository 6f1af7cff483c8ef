"""Helpers the classification unlearning methods share: a training loop, labels, fingerprints (chapter 5)."""
from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..threads import adapt as adapt_threads
from ..data import Dataset
from ..errors import CourseError
from ..train import set_bn_mode as _set_bn  # frozen or live batch-norm statistics


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def forget_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Accuracy of ``model`` (switched to eval mode) on ``x`` ``(N, ...)`` with labels ``y`` ``(N,)``.

    The stopping check of GA and IU: both stop once the forget set is forgotten.
    """
    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).float().mean())


def sgd_loop(model: nn.Module, data: Dataset, *, epochs: int, lr: float, batch_size: int = 64,
             momentum: float = 0.9, weight_decay: float = 0.0, seed: int = 0, sign: float = 1.0,
             bn_mode: str = "train", schedule: str = "constant", loss_fn=None, penalty=None, after_step=None,
             progress: bool = False, desc: str = "unlearn") -> nn.Module:
    """Constant-learning-rate SGD on ``data`` (cross-entropy times ``sign``), in place; returns ``model``.

    Parameters
    ----------
    schedule:
        ``"constant"`` learning rate, or ``"linear"`` decay from ``lr`` to 0 over all steps.
    sign:
        ``+1`` minimises the cross-entropy (fine-tuning), ``-1`` maximises it (gradient ascent).
    loss_fn:
        Optional ``loss_fn(logits, labels) -> scalar`` replacing the cross-entropy (``sign`` still applies).
    penalty:
        Optional ``penalty(model, step, total_steps) -> scalar tensor`` added to the loss (l1-sparse).
    after_step:
        Optional ``after_step(model)`` called after every optimiser step (SalUn's hard mask).
    seed:
        Seeds the mini-batch order.
    """
    if schedule not in ("constant", "linear"):
        raise CourseError(f"Unknown schedule {schedule!r}; choose 'constant' or 'linear'.")
    if epochs < 0 or lr < 0 or batch_size <= 0:
        raise CourseError(f"epochs and lr must be >= 0 and batch_size > 0; got {epochs}, {lr}, {batch_size}.")
    device = model_device(model)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay)
    n = len(data)
    total = epochs * max(1, -(-n // batch_size))
    gen = torch.Generator().manual_seed(int(seed))
    step = 0
    bar = tqdm(total=total, desc=desc, disable=not progress or total == 0, leave=False)
    try:
        for _ in range(epochs):
            _set_bn(model, bn_mode)
            perm = torch.randperm(n, generator=gen)
            for start in range(0, n, batch_size):
                idx = perm[start:start + batch_size]
                xb, yb = data.x[idx].to(device), data.y[idx].to(device)
                adapt_threads()
                logits = model(xb)
                loss = sign * (F.cross_entropy(logits, yb) if loss_fn is None else loss_fn(logits, yb))
                if penalty is not None:
                    loss = loss + penalty(model, step, total)
                if not torch.isfinite(loss):
                    raise CourseError(f"{desc} diverged (the loss became {loss.item()}) at step {step}; "
                                      "lower its learning rate or its number of epochs.")
                if schedule == "linear":
                    for group in opt.param_groups:
                        group["lr"] = lr * (1.0 - step / max(1, total))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if after_step is not None:
                    after_step(model)
                step += 1
                bar.update(1)
    finally:
        bar.close()
        model.eval()
    model.eval()
    return model


def random_wrong_labels(y: torch.Tensor, num_classes: int, seed: int = 0) -> torch.Tensor:
    """For each label in ``y`` (N,), a uniformly random *different* class (N,), deterministic per seed."""
    gen = torch.Generator().manual_seed(int(seed))
    shift = torch.randint(1, num_classes, y.shape, generator=gen)
    return (y + shift) % num_classes


def concat(a: Dataset, b: Dataset) -> Dataset:
    return Dataset(a.name, torch.cat([a.x, b.x]), torch.cat([a.y, b.y]), list(a.classes), a.kind,
                   list(a.feature_names))


def fingerprint(*tensors: torch.Tensor) -> str:
    """A short SHA-256 of tensors' bytes (keys the cache of retrained models by their data)."""
    h = hashlib.sha256()
    for t in tensors:
        h.update(t.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def architecture_fingerprint(model: nn.Module) -> str:
    """Hash of the model's class and its state-dict names and shapes (not the values)."""
    desc = type(model).__name__ + ";" + ";".join(f"{k}:{tuple(v.shape)}" for k, v in model.state_dict().items())
    return hashlib.sha256(desc.encode()).hexdigest()[:16]


def reinitialise(model: nn.Module, seed: int) -> nn.Module:
    """Reset every layer's parameters (``reset_parameters``) with ``seed``: a fresh, untrained copy."""
    torch.manual_seed(int(seed))
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    return model
