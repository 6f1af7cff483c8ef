"""What the classifier's last layer gives away: the labels (iDLG) and the features it was fed.

For cross-entropy the last linear layer's gradient of one sample is ``dL/dW = (p - y) h^T`` and
``dL/db = p - y``: the bias gradient is negative only at the true class (Zhao et al. 2020), and
its input ``h`` is ``dW^T db / ||db||^2`` exactly (Phong et al. 2017; Geiping et al. 2020, Sec. 3).
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ...errors import CourseError
from ...models import classifier_head


def _last_layer_pair(target: Sequence[torch.Tensor], num_classes: int) -> tuple[int, int] | None:
    """Positions ``(weight, bias)`` of the classifier's last linear layer in ``target``, or ``None``."""
    target = list(target)
    for i in range(len(target) - 1, 0, -1):
        b, w = target[i], target[i - 1]
        if tuple(b.shape) == (num_classes,) and w.ndim == 2 and w.shape[0] == num_classes:
            return i - 1, i
    return None


def _last_layer_signal(target: Sequence[torch.Tensor], num_classes: int) -> torch.Tensor:
    """The per-class last-layer gradient: the bias if there is one, else the weight's row sums."""
    target = list(target)
    pair = _last_layer_pair(target, num_classes)
    if pair is not None:
        return torch.as_tensor(target[pair[1]]).detach().double().cpu()
    for g in reversed(target):
        if g.ndim == 2 and g.shape[0] == num_classes:
            return torch.as_tensor(g).detach().double().cpu().sum(dim=1)
    raise CourseError("Cannot find the classifier's last layer in the target gradient "
                      f"(no parameter with {num_classes} output rows); pass the labels explicitly.")


def analytic_labels(target_gradient: Sequence[torch.Tensor], num_classes: int, num_forget: int = 1) -> torch.Tensor:
    """Labels read from the last layer's gradient (iDLG for one sample; a sign heuristic for several).

    For cross-entropy, the last bias's gradient of one sample is ``softmax - onehot``: negative only
    at the true class. ``target_gradient`` must point along +g (``estimate_gradient``). For K
    samples, the classes with a negative entry are the labels present; when there are fewer such
    classes than K, the remaining slots repeat the most negative classes in turn.
    Returns ``(num_forget,)`` int64.
    """
    signal = _last_layer_signal(target_gradient, num_classes)
    order = torch.argsort(signal)  # most negative first
    negative = [int(c) for c in order if signal[c] < 0] or [int(order[0])]
    labels = [negative[i % len(negative)] for i in range(num_forget)]
    return torch.tensor(labels, dtype=torch.long)


def classifier_input_estimate(target_gradient: Sequence[torch.Tensor], num_classes: int,
                              labels: torch.Tensor) -> torch.Tensor | None:
    """The input ``h`` of the last linear layer, read from its gradient: ``(K, F)``, or ``None``.

    One sample: ``h = dW^T db / ||db||^2`` (exact for cross-entropy, since ``dW = db h^T``).
    K samples: ``h_k = dW[y_k] / db[y_k]`` with ``labels`` y (approximate). Any positive scale of
    the target gives the same ``h``; the sign convention of :func:`analytic_labels` is not needed.
    ``None`` when the model ends without a linear layer with bias.
    """
    pair = _last_layer_pair(target_gradient, num_classes)
    if pair is None:
        return None
    w = torch.as_tensor(target_gradient[pair[0]]).detach().double().cpu()
    b = torch.as_tensor(target_gradient[pair[1]]).detach().double().cpu()
    if len(labels) == 1:
        denom = float(b @ b)
        return None if denom == 0 else (w.T @ b / denom).reshape(1, -1).float()
    rows = []
    for y in labels.tolist():
        if b[y] == 0:
            return None
        rows.append(w[y] / b[y])
    return torch.stack(rows).float()


def last_linear(model: nn.Module, num_classes: int) -> nn.Linear | None:
    """The classifier head if it maps to ``num_classes`` logits with a bias (the feature stage needs both)."""
    try:
        head = classifier_head(model)
    except CourseError:
        return None
    return head if head.out_features == num_classes and head.bias is not None else None
