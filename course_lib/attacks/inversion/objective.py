"""The attack's objective (eqs. 3-6): the dummy gradient, its cosine to the target, the TV prior.

``image_tv``          the mean anisotropic total variation of eq. (6)
``cosine_loss``       ``1 - cos`` of eq. (5)
``soft_cross_entropy`` the loss of eq. (3) for soft labels, with accurate gradients at confident samples
``restart_loss``      the whole attack loss of eq. (4) of one restart, as a function of (x', y')
``attack_loss_terms`` the cosine and TV terms of any candidate (the recovery, or the removed sample itself)
``smoothed_model``    a Softplus copy of a ReLU model (``InversionConfig.smooth_beta``, an addition)
"""
from __future__ import annotations

import copy
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad

from ...errors import CourseError


def image_tv(x: torch.Tensor) -> torch.Tensor:
    """Mean anisotropic total variation of eq. (6) of images ``(..., C, H, W)``: one value per image.

    ``mean |x[..., i+1, j] - x[..., i, j]| + mean |x[..., i, j+1] - x[..., i, j]|`` over channels and
    pixel pairs. Chapter 3's first exercise asks the learner to write it.
    """
    dh = (x[..., 1:, :] - x[..., :-1, :]).abs().mean(dim=(-3, -2, -1))
    dw = (x[..., :, 1:] - x[..., :, :-1]).abs().mean(dim=(-3, -2, -1))
    return dh + dw


def cosine_loss(gradient: torch.Tensor, target_unit: torch.Tensor) -> torch.Tensor:
    """``1 - cos(gradient, target)`` for a flat gradient and a unit-norm target (eq. 5)."""
    return 1.0 - gradient @ target_unit / (gradient.norm() + 1e-20)


def soft_cross_entropy(logits: torch.Tensor, y_soft: torch.Tensor) -> torch.Tensor:
    """Summed cross-entropy ``-sum_k y_k log softmax(z)_k`` of logits ``(N, C)``, with accurate gradients.

    The usual ``log_softmax`` backward forms the gradient ``p - y`` directly; for a confidently
    classified sample ``p_y`` rounds to 1 in float32 and the true class's entry ``p_y - 1`` becomes
    0 or rounding noise, so the dummy gradient of eq. (3) points the wrong way (on a well-trained
    MNIST ConvNet this alone spoils the recovery). Here ``-log p_k`` is computed as
    ``logsumexp_c (z_c - z_k)`` with the ``c = k`` term held at an exact 0, so autograd obtains
    the true class's entry as ``-sum_{c != k} p_c``, a sum of small, accurately stored numbers.
    Same value, same gradient in exact arithmetic.
    """
    c = logits.shape[-1]
    diff = logits.unsqueeze(-2) - logits.unsqueeze(-1)  # (N, k, c): z_c - z_k
    eye = torch.eye(c, dtype=torch.bool, device=logits.device)
    nll = torch.logsumexp(diff.masked_fill(eye, 0.0), dim=-1)  # (N, k): -log p_k
    return (y_soft * nll).sum()


def smoothed_model(model: nn.Module, beta: float) -> nn.Module:
    """A copy of ``model`` with every ``nn.ReLU`` module replaced by ``nn.Softplus(beta)`` (same weights).

    ``beta <= 0`` returns ``model`` itself. See ``InversionConfig.smooth_beta``.
    """
    if beta <= 0 or not any(isinstance(m, nn.ReLU) for m in model.modules()):
        return model
    smooth = copy.deepcopy(model)
    for parent in smooth.modules():
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.ReLU):
                setattr(parent, name, nn.Softplus(beta=beta))
    return smooth.eval()


def attack_model(model: nn.Module) -> nn.Module:
    """A float32 eval-mode copy of ``model`` if it is stored in another precision, else ``model``."""
    p = next(model.parameters())
    if p.dtype == torch.float32:
        return model.eval()
    return copy.deepcopy(model).float().eval()


def restart_loss(model: nn.Module, params: dict, buffers: dict, target_unit: torch.Tensor,
                      tv_weight: float, image: bool, layer_weighting: str = "none") -> Callable:
    """The attack loss of one restart, ``f(x (K, ...), y_soft (K, classes), tv_scale=1) -> scalar``.

    ``tv_scale`` multiplies ``tv_weight`` (the continuation of ``InversionConfig.tv_final_factor``).

    ``layer_weighting="none"`` is eq. (5) on the concatenated gradient; ``"equal"`` averages the
    cosines of the individual parameter tensors instead (each layer counts the same).
    """
    names = list(params)
    sizes = [params[n].numel() for n in names]
    if layer_weighting == "equal":
        pieces = torch.split(target_unit, sizes)
        layer_targets = [t / (t.norm() + 1e-30) for t in pieces]

    def loss(x: torch.Tensor, y_soft: torch.Tensor, tv_scale: float = 1.0) -> torch.Tensor:
        def ce(p):
            out = functional_call(model, (p, buffers), (x,))
            return soft_cross_entropy(out, y_soft)

        g = grad(ce)(params)
        if layer_weighting == "equal":
            cos = [g[n].reshape(-1) @ t / (g[n].norm() + 1e-20) for n, t in zip(names, layer_targets)]
            value = 1.0 - torch.stack(cos).mean()
        else:
            flat = torch.cat([g[n].reshape(-1) for n in names])
            value = cosine_loss(flat, target_unit)
        return value + tv_term(x, tv_weight * tv_scale, image)

    return loss


def tv_term(x: torch.Tensor, tv_weight: float, image: bool):
    """alpha * mean TV (eqs. 4, 6) of images ``(K, C, H, W)``; 0 for tabular rows or alpha = 0."""
    return tv_weight * image_tv(x).mean() if image and tv_weight > 0 else 0.0


def model_loss(model: nn.Module, target_unit: torch.Tensor, tv_weight: float, image: bool,
                layer_weighting: str = "none") -> Callable:
    """:func:`restart_loss` with ``model``'s own (detached) parameters and buffers."""
    return restart_loss(model, {k: v.detach() for k, v in model.named_parameters()},
                             {k: v.detach() for k, v in model.named_buffers()}, target_unit,
                             tv_weight, image, layer_weighting)


def unit_target(model: nn.Module, target: Sequence[torch.Tensor]) -> torch.Tensor:
    """The target gradient flattened to one unit-norm float32 vector on ``model``'s device (checked)."""
    params = list(model.parameters())
    if len(target) != len(params) or any(tuple(t.shape) != tuple(p.shape) for t, p in zip(target, params)):
        raise CourseError("The target gradient does not match the model's parameters (count or shapes differ): "
                          "estimate it from this model and its unlearned version.")
    flat = torch.cat([torch.as_tensor(t).detach().reshape(-1).cpu().double() for t in target])
    norm = float(flat.norm())
    if not norm > 0:
        raise CourseError("The target gradient is zero: the two models are identical, so there is nothing "
                          "to invert (did unlearning change the model?).")
    return (flat / norm).float().to(params[0].device)


def attack_loss_terms(model: nn.Module, target_gradient: Sequence[torch.Tensor], samples: torch.Tensor,
                      labels: Sequence[int] | torch.Tensor, *, num_classes: int, tv_weight: float) -> dict:
    """The two terms of the attack loss (eq. 4) for given ``samples`` ``(K, C, H, W)`` (or ``(K, D)``).

    Returns ``{"cosine_loss": 1 - cos(grad, target) (eq. 5), "tv_term": tv_weight * TV (eq. 6, 0
    for tables), "total": their sum}`` as floats, with the gradient of the K samples (summed) taken
    at ``model`` as it is (no smoothing), exactly as :func:`invert_gradient` ranks its restarts.
    Any candidate can be scored -- the recovery, or (for teaching) the removed sample itself -- which
    tells whether a bad recovery is the search's fault (the truth scores lower) or the objective's
    (it does not). Used by :func:`course_lib.experiments.recovery.objective_audit` and chapter 3.
    """
    model = attack_model(model)
    target_unit = unit_target(model, list(target_gradient))
    x = torch.as_tensor(samples).detach().float().to(target_unit.device)
    labels_t = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    if len(labels_t) != len(x):
        raise CourseError(f"Got {len(labels_t)} labels for {len(x)} samples.")
    y = F.one_hot(labels_t, num_classes).float().to(x.device)
    image = x.ndim == 4
    cos_part = float(model_loss(model, target_unit, 0.0, image)(x, y))
    tv_part = float(tv_term(x, tv_weight, image))
    return {"cosine_loss": cos_part, "tv_term": tv_part, "total": cos_part + tv_part}
