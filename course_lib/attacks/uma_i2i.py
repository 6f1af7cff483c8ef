"""The Unlearning Mapping Attack for an inpainter (RUB eq. 2 with D = MSE, Proposition 2), chapter 7.

For every forget image x with its mask m, the attacker, who holds the original inpainter f and
the unlearned one f_u (RUB's white-box, worst-case protocol, Section 4.2), looks for an input
change that makes f_u reproduce what f made of the masked image:

    delta* = argmin_delta  D[ f_u(T(x + delta)), f(T(x)) ],   D = mean squared error over the output

subject to ||delta||_inf <= eps and x + delta in [0, 1] (RUB's radii 8/255 and 16/255), or with no
radius at all ("unbounded": Proposition 2 lets a generative model's input be anything, since only
the output matters; on [0, 1] pixels that is eps = 1, the input stays an image).

Two choices RUB leaves open, made here and documented:

where delta acts
    On the **visible pixels only** (``region="visible"``, the default): the hole stays empty and
    the mask channel unchanged, so the attacker cannot paint the answer into the hole; whatever
    appears there comes out of the model. ``region="all"`` also perturbs the (zero-filled) hole
    pixels, for comparison.
where D is measured
    On the **whole output image**, as eq. 2 compares outputs. The reconstruction inside the hole is
    reported separately by the metrics.

The search starts from delta = 0 and keeps, for each image, the delta with the lowest D seen:

bounded radius
    projected gradient descent (Madry et al., 2018): ``steps`` signed gradient steps of size
    ``step_size`` (default 2.5 * eps / steps), each followed by the projection onto the ball and
    the pixel box.
unbounded
    the same projection onto the pixel box, but Adam steps (learning rate 0.05) instead of signed
    ones (a course choice, ``optimizer="sign"`` switches it off). Without a ball, a signed step of
    2.5 / steps only sets how coarsely the box is walked; Adam reaches a lower D in the same number
    of steps (measured on mnist-5k for I2I and SalUn; ``benchmarks/i2i_speed.py`` times both).

The model's input is never clamped inside the differentiated computation (delta is kept feasible
by the projection instead): a clamp has zero gradient at 0 and 1, the values of most pixels of a
digit, and would freeze them.
The result also measures the central quantity of Li et al.'s encoder-only unlearning: how far the
unlearned encoder's encoding of the attacked input is from the original encoder's encoding of the
clean masked input (the decoder being unchanged, a matching encoding reproduces the original output).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from ..errors import CourseError, check_range
from ..models.inpainter import apply_mask
from ..threads import adapt as adapt_threads

#: The radius that stands for "unbounded" on [0, 1] pixels: every image is within L-inf 1 of every other.
UNBOUNDED = 1.0


def _per_image_mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return ((a - b) ** 2).flatten(1).mean(1)


def relative_encoding_distance(z: torch.Tensor, z_ref: torch.Tensor) -> torch.Tensor:
    """||z - z_ref||^2 / ||z_ref||^2 per image ``(N,)``: 0 = the original encoding, 1 = as far as the origin."""
    return (z - z_ref).flatten(1).pow(2).sum(1) / z_ref.flatten(1).pow(2).sum(1).clamp_min(1e-12)


@dataclass
class InpaintingAttackResult:
    """What the attack found and what it cost.

    Attributes
    ----------
    masked_adv:
        The attacked masked images T(x) + delta ``(N, C, H, W)`` in [0, 1]: the visible pixels
        moved by delta, the hole still 0 with ``region="visible"``. The model's input is
        ``torch.cat([masked_adv, mask], 1)``.
    output_before, output_after:
        f_u(T(x)) and f_u(T(x + delta)), ``(N, C, H, W)``.
    target:
        f(T(x)), the original model's output the attack aims at.
    mse_before, mse_after:
        D before and after the attack per image ``(N,)`` (mean squared error over the output).
    encoding_before, encoding_after:
        :func:`relative_encoding_distance` of E_u(T(x)) and of E_u(T(x + delta)) to E_0(T(x)), ``(N,)``.
    eps, steps, step_size, region, optimizer, seconds:
        The radius (``UNBOUNDED`` = 1), iterations, step (Adam: learning rate), where delta acted,
        ``"sign"`` or ``"adam"``, wall-clock time.
    """

    masked_adv: torch.Tensor
    output_before: torch.Tensor
    output_after: torch.Tensor
    target: torch.Tensor
    mse_before: torch.Tensor
    mse_after: torch.Tensor
    encoding_before: torch.Tensor
    encoding_after: torch.Tensor
    eps: float
    steps: int
    step_size: float
    region: str
    seconds: float
    optimizer: str = "sign"

    @property
    def gradient_evaluations(self) -> int:
        return int(self.masked_adv.shape[0]) * int(self.steps)

    def cost(self) -> dict:
        """The attack's cost: steps, gradient evaluations (images x steps), seconds."""
        n = int(self.masked_adv.shape[0])
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "region": self.region,
                "optimizer": self.optimizer,
                "samples": n, "gradient_evaluations": self.gradient_evaluations, "seconds": round(self.seconds, 3),
                "seconds_per_step": round(self.seconds / self.steps, 5) if self.steps else 0.0}


def project_delta(base: torch.Tensor, delta: torch.Tensor, free: torch.Tensor, eps: float) -> torch.Tensor:
    """The attacker's projection after each step: ``|delta| <= eps``, zero where ``free`` is 0, pixels in [0, 1].

    ``base`` is the masked image T(x) ``(N, C, H, W)`` (hole pixels 0), ``delta`` the perturbation
    of the same shape, ``free`` ``(N, 1, H, W)`` 1 where delta may act (the visible pixels, or all)
    and 0 elsewhere. Returns the feasible delta (the L-inf ball, then the pixel box).
    """
    step = delta.clamp(-eps, eps) * free
    return (base + step).clamp(0, 1) - base


def inpainting_mapping_attack(unlearned: nn.Module, original: nn.Module, x: torch.Tensor, mask: torch.Tensor, *,
                              eps: float, steps: int = 50, step_size: float | None = None, region: str = "visible",
                              optimizer: str | None = None, batch_size: int = 256,
                              progress: bool = False) -> InpaintingAttackResult:
    """Run UMA for generators (eq. 2, D = MSE) on images ``x`` ``(N, C, H, W)`` under masks ``mask`` ``(N, 1, H, W)``.

    Parameters
    ----------
    unlearned, original:
        f_u and f, inpainters with ``encode``/``forward`` (:class:`~course_lib.models.inpainter.Inpainter`).
        Only the input is optimised; neither model changes.
    eps:
        L-inf radius on [0, 1] pixels (8/255, 16/255, or ``UNBOUNDED`` = 1). ``0`` returns x unchanged.
    steps, step_size:
        Iterations and step: for ``"sign"`` the signed step (default 2.5 * eps / steps), for
        ``"adam"`` Adam's learning rate (default 0.05).
    region:
        ``"visible"`` (default: delta only on the visible pixels) or ``"all"``.
    optimizer:
        ``"sign"`` (PGD's signed steps) or ``"adam"``; default ``"sign"`` for a bounded radius and
        ``"adam"`` for the unbounded one (see the module docstring).

    Used in chapter 7 and by ``course-lib rub --task i2i``.
    """
    check_range(float(eps), 0.0, UNBOUNDED, "eps (the L-inf radius on [0, 1] pixels; 1 = unbounded)")
    if region not in ("visible", "all"):
        raise CourseError(f"region must be 'visible' (delta outside the hole) or 'all'; got {region!r}.")
    if steps < 0:
        raise CourseError(f"steps must be >= 0; got {steps}.")
    optimizer = optimizer or ("adam" if float(eps) >= UNBOUNDED else "sign")
    if optimizer not in ("sign", "adam"):
        raise CourseError(f"optimizer must be 'sign' (PGD) or 'adam'; got {optimizer!r}.")
    if x.shape[0] != mask.shape[0] or x.shape[-2:] != mask.shape[-2:]:
        raise CourseError(f"x {tuple(x.shape)} and mask {tuple(mask.shape)} must hold the same images.")
    unlearned.eval()
    original.eval()
    device = next(unlearned.parameters()).device
    eps = float(eps)
    steps = int(steps) if eps > 0 else 0
    if step_size is not None:
        alpha = float(step_size)
    else:
        alpha = (0.05 if optimizer == "adam" else 2.5 * eps / steps) if steps else 0.0
    t0 = time.perf_counter()
    parts: dict[str, list[torch.Tensor]] = {k: [] for k in ("x", "out0", "out1", "tgt", "d0", "d1", "z0", "z1")}
    req = [p.requires_grad for p in unlearned.parameters()]
    for p in unlearned.parameters():
        p.requires_grad_(False)
    try:
        bar = tqdm(total=len(x) * max(steps, 1), desc=f"UMA-I2I eps={eps:.4f}", disable=not progress, leave=False)
        for s in range(0, len(x), batch_size):
            xb, mb = x[s:s + batch_size].to(device), mask[s:s + batch_size].to(device)
            free = (1.0 - mb) if region == "visible" else torch.ones_like(mb)
            with torch.no_grad():
                clean_in = apply_mask(xb, mb)
                target = original(clean_in)
                z_ref = original.encode(clean_in)
                out0 = unlearned(clean_in)
                d0 = _per_image_mse(out0, target)
            base = xb * (1.0 - mb)                      # the masked image T(x): hole pixels 0
            best_v, best_d = base.clone(), d0.clone()
            delta = torch.zeros_like(xb)
            adam = torch.optim.Adam([delta], lr=alpha) if optimizer == "adam" and steps else None
            for _ in range(steps):
                adapt_threads()
                delta.requires_grad_(True)
                # no clamp here: delta is already feasible (projected below), and a clamp would zero
                # the gradient of every pixel at 0 or 1 (most of a digit), freezing them for good
                v = base + delta * free
                d = _per_image_mse(unlearned(torch.cat([v, mb], 1)), target)
                grad, = torch.autograd.grad(d.sum(), delta)
                with torch.no_grad():
                    better = d.detach() < best_d
                    best_d = torch.where(better, d.detach(), best_d)
                    best_v[better] = v.detach()[better]
                    if adam is not None:
                        delta.grad = grad
                        adam.step()
                        step = delta.detach()
                    else:
                        step = delta.detach() - alpha * grad.sign()
                    step = project_delta(base, step, free, eps)
                    if adam is not None:
                        delta.copy_(step)
                    else:
                        delta = step
                bar.update(len(xb))
            with torch.no_grad():
                if steps:  # the final iterate
                    v = base + delta * free
                    d = _per_image_mse(unlearned(torch.cat([v, mb], 1)), target)
                    better = d < best_d
                    best_d = torch.where(better, d, best_d)
                    best_v[better] = v[better]
                else:
                    bar.update(len(xb))
                adv_in = torch.cat([best_v, mb], 1)
                parts["x"].append(best_v.cpu())
                parts["out0"].append(out0.cpu())
                parts["out1"].append(unlearned(adv_in).cpu())
                parts["tgt"].append(target.cpu())
                parts["d0"].append(d0.cpu())
                parts["d1"].append(best_d.cpu())
                parts["z0"].append(relative_encoding_distance(unlearned.encode(clean_in), z_ref).cpu())
                parts["z1"].append(relative_encoding_distance(unlearned.encode(adv_in), z_ref).cpu())
        bar.close()
    finally:
        for p, r in zip(unlearned.parameters(), req):
            p.requires_grad_(r)
    cat = {k: (torch.cat(v) if v else torch.empty(0)) for k, v in parts.items()}
    return InpaintingAttackResult(cat["x"], cat["out0"], cat["out1"], cat["tgt"], cat["d0"], cat["d1"], cat["z0"],
                                  cat["z1"], eps, steps, alpha, region, time.perf_counter() - t0, optimizer)
