"""The Unlearning Mapping Attack (UMA) of RUB for classifiers (eq. 2, Proposition 3), chapter 5.

For every forget sample x the attacker, who holds the original model f and the unlearned model
f_u (RUB's white-box, worst-case protocol, Section 4.2), looks for a small input change that maps
f_u back onto what f said about x:

    delta* = argmin_{||delta||_inf <= eps, 0 <= x + delta <= 1}  D[f_u(x + delta), f(x)]      (eq. 2)

with D the Kullback-Leibler divergence between the two softmax outputs,
D = KL(f_u(x + delta) || f(x)) = sum_k p_u,k log(p_u,k / p_k). We solve it with projected gradient
descent (Madry et al., 2018): ``steps`` signed-gradient steps of size ``step_size`` (default
2.5 * eps / steps) from a random start in the ball, each followed by projection onto the
L-inf ball and the [0, 1] pixel box, keeping for each sample the delta with the lowest D seen.

Proposition 4 (robust unlearning) asks that, for every x in D_u, even the best delta leaves the
outputs more than eps1 apart, ||f_u(x + delta) - f(x)|| > eps1; :func:`robustness_verdict` checks
it on the attack's result with the total-variation distance (:func:`tv_distance`).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..threads import adapt as adapt_threads
from ..errors import CourseError, check_range


def kl_to_original(log_p_u: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """KL(p_u || p) per row for log-probabilities ``(N, K)`` -> ``(N,)`` nats."""
    return (log_p_u.exp() * (log_p_u - log_p)).sum(1)


def tv_distance(log_p_u: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """Total-variation distance 1/2 ||p_u - p||_1 per row ``(N,)``, in [0, 1].

    Propositions 3-4 measure closeness with a norm of the outputs; we use this one because it is
    readable: if p is one-hot on class y and the distance is below 1/2, then p_u gives y more than
    half of its mass, so the prediction is back.
    """
    return 0.5 * (log_p_u.exp() - log_p.exp()).abs().sum(1)


@torch.no_grad()
def _compare_outputs(distance, original: nn.Module, unlearned: nn.Module, x: torch.Tensor,
                     batch_size: int) -> torch.Tensor:
    """``distance(log f_u(x), log f(x))`` per sample ``(N,)``, both models in eval mode, in batches."""
    unlearned.eval()
    original.eval()
    device = next(unlearned.parameters()).device
    out = []
    for s in range(0, len(x), batch_size):
        xb = x[s:s + batch_size].to(device)
        out.append(distance(F.log_softmax(unlearned(xb), 1), F.log_softmax(original(xb), 1)).cpu())
    return torch.cat(out) if out else torch.empty(0)


def output_distance(original: nn.Module, unlearned: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """||f_u(x) - f(x)|| as total-variation distance per sample ``(N,)`` in [0, 1] (eq. 1, Proposition 4)."""
    return _compare_outputs(tv_distance, original, unlearned, x, batch_size)


def output_divergence(original: nn.Module, unlearned: nn.Module, x: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """D[f_u(x), f(x)] = KL(f_u(x) || f(x)) per sample ``(N,)`` (nats), both models in eval mode."""
    return _compare_outputs(kl_to_original, original, unlearned, x, batch_size)


@dataclass
class UMAResult:
    """What the attack found and what it cost.

    Attributes
    ----------
    x_adv:
        Attacked inputs x + delta, ``(N, C, H, W)`` in [0, 1].
    divergence_before, divergence_after:
        D[f_u(x), f(x)] and D[f_u(x + delta), f(x)] per sample, ``(N,)`` in nats.
    distance_before, distance_after:
        The same comparison as total variation 1/2 ||p_u - p||_1 in [0, 1] (at the best delta found
        for D), the norm that :func:`robustness_verdict` applies Proposition 4 with.
    eps, steps, step_size:
        The L-inf radius (pixel units, [0, 1] scale), PGD iterations and step size.
    seconds:
        Wall-clock time of the attack. ``gradient_evaluations`` = N * steps.
    """

    x_adv: torch.Tensor
    divergence_before: torch.Tensor
    divergence_after: torch.Tensor
    eps: float
    steps: int
    step_size: float
    seconds: float
    distance_before: torch.Tensor | None = None
    distance_after: torch.Tensor | None = None

    @property
    def gradient_evaluations(self) -> int:
        return int(self.x_adv.shape[0]) * int(self.steps)

    def cost(self) -> dict:
        return {"eps": self.eps, "steps": self.steps, "step_size": self.step_size, "samples": int(self.x_adv.shape[0]),
                "gradient_evaluations": self.gradient_evaluations, "seconds": round(self.seconds, 3)}


def unlearning_mapping_attack(original: nn.Module, unlearned: nn.Module, x: torch.Tensor, *, eps: float,
                              steps: int = 20, step_size: float | None = None, random_start: bool = True,
                              seed: int = 0, batch_size: int = 256, progress: bool = False) -> UMAResult:
    """Run UMA (eq. 2) on the forget inputs ``x`` ``(N, C, H, W)`` in [0, 1]; used in chapter 5.

    Parameters
    ----------
    original, unlearned:
        f and f_u. Only the input is optimised; neither model changes (both in eval mode).
    eps:
        L-inf radius in [0, 1] pixel units (RUB: 8/255 and 16/255). ``eps = 0`` returns x unchanged.
    steps, step_size:
        PGD iterations and step (default ``2.5 * eps / steps``, Madry et al.'s rule).
    random_start, seed:
        Start from a uniform point in the ball (seeded), as in PGD.

    Returns
    -------
    UMAResult
        The attacked inputs, the divergence before and after per sample, and the cost.
    """
    check_range(float(eps), 0.0, 1.0, "eps (the L-inf radius on [0, 1] pixels)")
    if steps < 0:
        raise CourseError(f"steps must be >= 0; got {steps}.")
    unlearned.eval()
    original.eval()
    device = next(unlearned.parameters()).device
    eps = float(eps)
    steps = int(steps) if eps > 0 else 0
    alpha = float(step_size) if step_size is not None else (2.5 * eps / steps if steps else 0.0)
    gen = torch.Generator().manual_seed(int(seed))
    t0 = time.perf_counter()
    advs, before, after, tv0, tv1 = [], [], [], [], []
    req = [p.requires_grad for p in unlearned.parameters()]
    for p in unlearned.parameters():
        p.requires_grad_(False)
    try:
        bar = tqdm(total=len(x) * max(steps, 1), desc=f"UMA eps={eps:.4f}", disable=not progress, leave=False)
        for s in range(0, len(x), batch_size):
            xb = x[s:s + batch_size].to(device)
            with torch.no_grad():
                log_p = F.log_softmax(original(xb), 1)
                d0 = kl_to_original(F.log_softmax(unlearned(xb), 1), log_p)
            best_x, best_d = xb.clone(), d0.clone()
            if steps:
                if random_start:
                    noise = (torch.rand(xb.shape, generator=gen) * 2 - 1).to(device) * eps
                    delta = ((xb + noise).clamp(0, 1) - xb)
                else:
                    delta = torch.zeros_like(xb)
                for _ in range(steps):
                    adapt_threads()
                    delta.requires_grad_(True)
                    d = kl_to_original(F.log_softmax(unlearned(xb + delta), 1), log_p)
                    grad, = torch.autograd.grad(d.sum(), delta)
                    with torch.no_grad():
                        better = d.detach() < best_d
                        best_d = torch.where(better, d.detach(), best_d)
                        best_x[better] = (xb + delta.detach())[better]
                        delta = delta.detach() - alpha * grad.sign()
                        delta = delta.clamp(-eps, eps)
                        delta = (xb + delta).clamp(0, 1) - xb
                    bar.update(len(xb))
                with torch.no_grad():  # the final iterate
                    d = kl_to_original(F.log_softmax(unlearned(xb + delta), 1), log_p)
                    better = d < best_d
                    best_d = torch.where(better, d, best_d)
                    best_x[better] = (xb + delta)[better]
            else:
                bar.update(len(xb))
            with torch.no_grad():
                tv0.append(tv_distance(F.log_softmax(unlearned(xb), 1), log_p).cpu())
                tv1.append(tv_distance(F.log_softmax(unlearned(best_x), 1), log_p).cpu())
            advs.append(best_x.cpu())
            before.append(d0.cpu())
            after.append(best_d.cpu())
        bar.close()
    finally:
        for p, r in zip(unlearned.parameters(), req):
            p.requires_grad_(r)
    cat = (lambda t: torch.cat(t)) if advs else (lambda t: torch.empty(0))
    return UMAResult(cat(advs), cat(before), cat(after), eps, steps, alpha, time.perf_counter() - t0,
                     cat(tv0), cat(tv1))


def robustness_verdict(distance_after: torch.Tensor, distance_forget: torch.Tensor,
                       distance_retain: torch.Tensor, *, eps1: float = 0.5, eps2: float = 0.1) -> dict:
    """Proposition 4's verdict for one unlearned model and one attack radius (chapter 5).

    Parameters
    ----------
    distance_after:
        ||f_u(x + delta) - f(x)|| at the perturbation UMA found, per forget sample ``(N_u,)``.
    distance_forget, distance_retain:
        ||f_u(x) - f(x)|| without attack on forget and on retain samples (condition (1)).
    eps1, eps2:
        The margins of eq. (1): forgetting means E_{D_u} > eps1, utility means E_{D_r} <= eps2.
        The runner uses total variation (:func:`tv_distance`), eps1 = 0.5, eps2 = 0.1.

    Returns
    -------
    dict with ``forgets`` (E_{D_u} > eps1), ``keeps_utility`` (E_{D_r} <= eps2),
    ``mapped_back_share`` (share of forget samples that UMA brings within eps1 of f(x)), the
    smallest distance after the attack, and ``robust``: conditions (1) hold and no forget sample is
    mapped back (Proposition 4's "for all x"). The verdict is empirical: it holds against this
    attack and budget, not against every delta.
    """
    forgets = bool(distance_forget.mean() > eps1) if len(distance_forget) else False
    keeps = bool(distance_retain.mean() <= eps2) if len(distance_retain) else False
    mapped = float((distance_after <= eps1).float().mean()) if len(distance_after) else float("nan")
    return {"eps1": eps1, "eps2": eps2, "forgets": forgets, "keeps_utility": keeps,
            "mean_distance_forget": float(distance_forget.mean()) if len(distance_forget) else float("nan"),
            "mean_distance_retain": float(distance_retain.mean()) if len(distance_retain) else float("nan"),
            "min_distance_after_attack": float(distance_after.min()) if len(distance_after) else float("nan"),
            "mapped_back_share": mapped, "robust": forgets and keeps and mapped == 0.0}
