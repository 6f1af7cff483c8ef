"""Step 1 of the white-box attack: read the removed samples' gradient off two models (chapter 2).

Public API (also used by the defenses of chapter 6)
---------------------------------------------------
``weight_difference(original, unlearned)``
    Eq. (2) of the inversion paper: ``theta - theta_u``, one float64 tensor per parameter.
``estimate_gradient(original, unlearned)``
    ``theta_u - theta = -(theta - theta_u)``: the estimate of **+g**, the removed samples' summed
    gradient dL/dtheta, in the sign convention of :mod:`course_lib.unlearn.paper` (gradient
    descent subtracted g when the model learned the samples, so unlearning moves along +g).
    This is the target that :func:`course_lib.attacks.inversion.invert_gradient` matches.
``estimate_gradient_reference(original, unlearned, pretrained, train_size, num_forget=1)``
    The estimator of the "when does exact unlearning leak?" lab: an attacker who also knows the
    starting point theta_0 (the public M0) and the training-set size N undoes the 1/N of the mean
    loss. Exact for one full-batch step of SGD, approximate otherwise.
``gradient_cosine(estimate, true_gradient)``
    Cosine similarity (float64) of two gradients given as lists of tensors.
``true_gradient(model, samples)``
    The removed samples' real summed gradient at ``model`` (eval mode), to compare with.

Precision
---------
Approximate unlearning adds ``(eta m / b) g = (1e-3 / 128) g`` to weights of size ~0.1, whose
float32 spacing is ~1e-8. For a well-fitted sample (loss ~1e-4, ||g|| ~ 0.04 spread over half a
million weights) each weight moves by less than one float32 step, so the update is partly
*rounded away* when the developer stores theta_u in float32: chapter 2 measures cosines between
0.8 and 0.999 for float32 models (the rounding is in theta_u itself; subtracting two float32
models in float64 cannot bring it back, though the functions here do compute in float64). The
recovery experiments therefore let the developer keep float64 weights (``precision="float64"``),
which removes the rounding, and report float32 for comparison.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from ..data import Dataset
from ..models import flatten
from ..errors import CourseError


def _params(model_or_list) -> list[torch.Tensor]:
    if isinstance(model_or_list, nn.Module):
        return [p.detach() for p in model_or_list.parameters()]
    return [torch.as_tensor(p).detach() for p in model_or_list]


def _check_same(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor], what: str) -> None:
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        raise CourseError(f"The {what} do not have the same architecture (parameter shapes differ); "
                          "both must be the same model before and after unlearning.")


def weight_difference(original: nn.Module, unlearned: nn.Module) -> list[torch.Tensor]:
    """Eq. (2): ``theta - theta_u`` per parameter, computed in float64 on the CPU.

    Points along **minus** the removed samples' gradient (see :mod:`course_lib.unlearn.paper`).
    Chapter 2.
    """
    a, b = _params(original), _params(unlearned)
    _check_same(a, b, "original and unlearned models")
    return [x.cpu().double() - y.cpu().double() for x, y in zip(a, b)]


def estimate_gradient(original: nn.Module, unlearned: nn.Module) -> list[torch.Tensor]:
    """``theta_u - theta`` per parameter (float64): the estimate of +g, the removed samples' gradient.

    The scale (eta m / b for approximate unlearning) is unknown to the attacker and irrelevant:
    the inversion matches directions (cosine, eq. 4-5). Chapters 2, 3 and 6.
    """
    return [-d for d in weight_difference(original, unlearned)]


def estimate_gradient_reference(original: nn.Module, unlearned: nn.Module, pretrained: nn.Module, *,
                                train_size: int, num_forget: int = 1) -> list[torch.Tensor]:
    """Estimate +g when the attacker also knows theta_0 (M0) and the training-set size N.

    Exact unlearning fine-tunes M0 on N samples (M) and on the N - k others (M_u). For one
    full-batch SGD step with the mean loss, ``theta = theta_0 - eta/N * sum_N g`` and
    ``theta_u = theta_0 - eta/(N-k) * sum_{N-k} g``, hence

        sum_{removed} g  =  [N (theta_0 - theta) - (N - k)(theta_0 - theta_u)] / eta,

    which this function returns (without the unknown 1/eta; float64). Plain eq. (2) instead gives
    ``g_removed - k * mean_{N-k} g`` up to scale: the mean gradient of the retained samples leaks
    in, which is why exact unlearning on large training sets hides the sample. With several
    mini-batches, epochs or momentum the identity only holds approximately (chapter 2's lab).
    """
    if train_size <= num_forget or num_forget < 1:
        raise CourseError(f"train_size ({train_size}) must exceed num_forget ({num_forget}) >= 1.")
    t0, t, tu = _params(pretrained), _params(original), _params(unlearned)
    _check_same(t0, t, "pre-trained and original models")
    _check_same(t, tu, "original and unlearned models")
    n, k = float(train_size), float(num_forget)
    return [n * (a.cpu().double() - b.cpu().double()) - (n - k) * (a.cpu().double() - c.cpu().double())
            for a, b, c in zip(t0, t, tu)]


def gradient_cosine(estimate: Sequence[torch.Tensor], true_gradient: Sequence[torch.Tensor]) -> float:
    """Cosine similarity (eq. 5) of two gradients given per parameter, in float64.

    1 means the estimate points exactly along the true gradient; 0 means no information.
    Chapter 2 reports it for approximate and exact unlearning.
    """
    _check_same(list(estimate), list(true_gradient), "two gradients")
    a, b = flatten(estimate), flatten(true_gradient)
    den = float(a.norm() * b.norm())
    if den == 0.0:
        return 0.0
    return float(a @ b) / den


def true_gradient(model: nn.Module, samples: Dataset) -> list[torch.Tensor]:
    """The summed cross-entropy gradient of ``samples`` at ``model`` (eval mode), per parameter.

    What the attacker would love to have; used to score estimates (chapter 2).
    """
    if len(samples) == 0:
        raise CourseError("No samples given: choose at least one removed sample.")
    model.eval()
    params = list(model.parameters())
    dtype, device = params[0].dtype, params[0].device
    x = samples.x.to(device=device, dtype=dtype)
    loss = torch.nn.functional.cross_entropy(model(x), samples.y.to(device), reduction="sum")
    return [g.detach() for g in torch.autograd.grad(loss, params)]


def gradient_shares(model: nn.Module, samples: Dataset) -> torch.Tensor:
    """How much of the samples' summed gradient each one carries: ``<g_i, G> / ||G||^2``, float64 ``(K,)``.

    ``g_i`` is sample i's cross-entropy gradient at ``model`` (eval mode) and ``G = sum_i g_i``; the
    shares sum to 1 (a share can be slightly negative when g_i points against the others). A
    cross-entropy gradient scales with the sample's error ``1 - p_y``, so on a well-trained model a
    misread sample can carry almost all of G. The inversion matches G's direction to a cosine of
    about 0.999 at best (the gradient is taken at M, the update at M0), so a sample with a share of a
    few thousandths is effectively invisible to it. Chapter 3 (several samples removed at once).
    """
    if len(samples) == 0:
        raise CourseError("No samples given: choose at least one removed sample.")
    grads = [flatten(true_gradient(model, samples.subset(torch.tensor([i])))) for i in range(len(samples))]
    total = torch.stack(grads).sum(0)
    denom = float(total @ total)
    if denom == 0.0:
        raise CourseError("The summed gradient is zero: the model fits these samples perfectly, so they leave "
                          "no trace to share out.")
    return torch.stack([g @ total for g in grads]) / denom


__all__ = ["weight_difference", "estimate_gradient", "estimate_gradient_reference", "gradient_cosine",
           "true_gradient", "gradient_shares"]
