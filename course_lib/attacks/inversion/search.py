"""The search of the inversion attack (Section 3.2.1, Geiping et al.'s optimiser): stages and restarts.

:func:`invert_gradient` runs, for ``restarts`` random starts optimised together:

* stage 0, feature initialisation (addition; ``feature_iterations``): signed Adam towards the
  classifier input that the last layer's gradient reveals (:mod:`.last_layer`);
* the cosine stage: signed Adam with step decay on eq. (4) (on a Softplus copy of the model with
  ``smooth_beta > 0``, an addition), projected onto [0, 1] after each step, weak restarts pruned
  early (successive halving, an addition);
* the sharpening stage (addition) on the winning restart, kept only if the real model's loss falls.

The restart with the lowest attack loss of the real model, on its final projected inputs, wins:
the attacker never sees the truth.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import vmap
from tqdm.auto import tqdm

from ...errors import CourseError
from ...threads import adapt as adapt_threads
from .config import InversionConfig
from .last_layer import analytic_labels, classifier_input_estimate, last_linear
from .objective import attack_model, image_tv, model_loss, smoothed_model, tv_term, unit_target


@dataclass
class InversionResult:
    """What :func:`invert_gradient` recovered, and what it cost.

    Attributes
    ----------
    images:
        ``(K, C, H, W)`` (or ``(K, D)``) in [0, 1], from the restart with the lowest attack loss.
    labels:
        ``(K,)`` labels used (known) or inferred (unknown: argmax of the optimised soft label, or
        the analytic label).
    loss:
        Attack loss (1 - cosine + alpha TV, alpha = ``config.final_tv_weight``) of the returned restart.
    cosine:
        Cosine between its gradient and the target.
    restart_losses:
        Final attack loss of every restart.
    all_images:
        ``(R, K, ...)``: the final inputs of every restart.
    analytic_labels:
        ``(K,)`` labels read from the last layer's gradient (always computed, for comparison).
    label_known:
        Whether the labels were given.
    cost:
        ``iterations`` (per restart, cosine stage), ``feature_iterations`` (stage 0),
        ``sharpen_iterations`` (last stage, best restart only) and ``sharpened`` (kept or not), ``restarts``,
        ``seconds``, ``iterations_per_second``, ``restart_iterations_per_second`` and ``batched``.
    history:
        Attack loss of the best restart every ``iterations // 50`` steps, for plotting.
    """

    images: torch.Tensor
    labels: torch.Tensor
    loss: float
    cosine: float
    restart_losses: list[float]
    all_images: torch.Tensor
    analytic_labels: torch.Tensor
    label_known: bool
    cost: dict
    history: list[tuple[int, float]] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"labels": self.labels.tolist(), "loss": self.loss, "cosine": self.cosine,
                "restart_losses": self.restart_losses, "analytic_labels": self.analytic_labels.tolist(),
                "label_known": self.label_known, "cost": dict(self.cost)}


def _adam_with_step_decay(leaves: list[torch.Tensor], config: InversionConfig, iterations: int,
                          lr: float | None = None):
    """Adam at ``lr`` (default ``config.lr``) on ``leaves``, decayed by ``decay_factor`` at ``decay_at`` x ``iterations``."""
    opt = torch.optim.Adam(leaves, lr=config.lr if lr is None else lr)
    milestones = sorted({int(f * iterations) for f in config.decay_at if 0 < f < 1})
    return opt, torch.optim.lr_scheduler.MultiStepLR(opt, milestones=milestones, gamma=config.decay_factor)


def _feature_stage(model: nn.Module, linear: nn.Linear, h: torch.Tensor, x: torch.Tensor,
                   config: InversionConfig, image: bool, bar) -> torch.Tensor:
    """Stage 0: signed Adam on ``x`` (R, K, ...) towards the classifier inputs ``h`` (K, F).

    Minimises ``||phi(x) - h||^2 / ||h||^2 + tv_weight * TV(x)`` summed over the K samples,
    independently for every restart; returns the projected inputs.
    """
    captured = {}
    handle = linear.register_forward_pre_hook(lambda mod, inp: captured.__setitem__("h", inp[0]))
    R, K = x.shape[:2]
    h = h.to(x.device)
    h_sq = (h ** 2).sum(-1).clamp_min(1e-30)
    x = x.detach().clone().requires_grad_(True)
    opt, sched = _adam_with_step_decay([x], config, config.feature_iterations)
    try:
        for _ in range(config.feature_iterations):
            adapt_threads()
            model(x.reshape(R * K, *x.shape[2:]))
            feats = captured["h"].reshape(R, K, -1)
            loss = (((feats - h) ** 2).sum(-1) / h_sq).sum()
            if image and config.tv_weight > 0:
                loss = loss + config.tv_weight * image_tv(x).sum()
            (g,) = torch.autograd.grad(loss, [x])
            x.grad = g.sign() if config.signed else g
            opt.step()
            sched.step()
            with torch.no_grad():
                x.clamp_(0.0, 1.0)
            if bar is not None:
                bar.update(R)
    finally:
        handle.remove()
    return x.detach()


def _init_inputs(shape: tuple[int, ...], init: str, gen: torch.Generator) -> torch.Tensor:
    if init == "uniform":
        return torch.rand(shape, generator=gen)
    if init == "dark":
        return 0.2 * torch.rand(shape, generator=gen)
    return (0.5 + 0.05 * torch.randn(shape, generator=gen)).clamp_(0, 1)


def optimise_restarts(loss_fn: Callable, x: torch.Tensor, z: torch.Tensor | None, y_fixed: torch.Tensor | None,
              config: InversionConfig, bar, monitor: Callable | None, offset: int, lr: float | None = None):
    """Run Adam on ``x`` (R, K, ...) (and label logits ``z``).

    Returns ``(x, z, y_fixed, history, restart_iterations)``: the final leaves (fewer restarts
    when pruning), the best loss every few steps and the number of restart-iterations spent.
    """
    x = x.detach().clone().requires_grad_(True)
    z = z.detach().clone() if z is not None else None
    leaves = [x] + ([z.requires_grad_(True)] if z is not None else [])
    opt, sched = _adam_with_step_decay(leaves, config, config.iterations, lr)
    batched_loss = vmap(loss_fn, in_dims=(0, 0, None))
    losses = None
    history = []
    spent = 0
    every = max(1, config.iterations // 50)
    # a pruning point needs a loss to rank by: none before the first step (tiny budgets round to 0)
    prune_steps = {int(f * config.iterations) for f in config.prune_at if 0 < f < 1} - {0}
    for it in range(config.iterations):
        adapt_threads()
        if it in prune_steps and x.shape[0] > 1:
            x, z, y_fixed, opt = _prune(x, z, y_fixed, opt, losses.detach(), config.prune_keep)
            leaves = [x] + ([z] if z is not None else [])
            sched.optimizer = opt
        y = F.softmax(z, dim=-1) if z is not None else y_fixed
        tv_scale = config.tv_scale(it)
        losses = batched_loss(x, y, tv_scale)
        grads = torch.autograd.grad(losses.sum(), leaves)
        for leaf, g in zip(leaves, grads):
            leaf.grad = g.sign() if config.signed else g
        opt.step()
        sched.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if it % every == 0 or it == config.iterations - 1:
            history.append((it, float(losses.detach().min())))
        if monitor is not None:
            monitor(offset, it, x.detach())
        spent += x.shape[0]
        if bar is not None:
            bar.update(x.shape[0])
    return x.detach(), (z.detach() if z is not None else None), y_fixed, history, spent


def _sharpen(search_loss: Callable, x: torch.Tensor, y: torch.Tensor, config: InversionConfig, bar) -> torch.Tensor:
    """The sharpening stage (``InversionConfig.sharpen_*``) on one restart's inputs ``x`` (K, ...)."""
    x = x.detach().clone().requires_grad_(True)
    opt = torch.optim.Adam([x], lr=config.sharpen_lr)
    for _ in range(config.sharpen_iterations):
        adapt_threads()
        g, = torch.autograd.grad(search_loss(x, y), [x])
        x.grad = g / (g.abs().max() + 1e-20)
        opt.step()
        with torch.no_grad():
            x.clamp_(0.0, 1.0)
        if bar is not None:
            bar.update(1)
    return x.detach()


def _prune(x, z, y_fixed, opt, losses, keep: float):
    """Keep the best ``keep`` share of restarts (lowest loss) and their Adam state."""
    n = max(1, int(round(keep * x.shape[0])))
    idx = torch.argsort(losses)[:n].to(x.device)
    new_leaves = [x.detach()[idx].clone().requires_grad_(True)]
    if z is not None:
        new_leaves.append(z.detach()[idx].clone().requires_grad_(True))
    new_opt = torch.optim.Adam(new_leaves, lr=opt.param_groups[0]["lr"])
    new_opt.param_groups[0]["initial_lr"] = opt.param_groups[0].get("initial_lr", opt.param_groups[0]["lr"])
    for old, new in zip(opt.param_groups[0]["params"], new_leaves):
        state = opt.state.get(old, {})
        if state:
            new_opt.state[new] = {"step": state["step"].clone(), "exp_avg": state["exp_avg"][idx].clone(),
                                  "exp_avg_sq": state["exp_avg_sq"][idx].clone()}
    y_new = y_fixed[idx] if y_fixed is not None else None
    return new_leaves[0], (new_leaves[1] if z is not None else None), y_new, new_opt


def invert_gradient(model: nn.Module, target_gradient: Sequence[torch.Tensor], *, input_shape: Sequence[int],
                    num_classes: int, num_forget: int = 1, labels: Sequence[int] | torch.Tensor | None = None,
                    config: InversionConfig | None = None, seed: int = 0,
                    monitor: Callable[[int, int, torch.Tensor], None] | None = None) -> InversionResult:
    """Recover samples from a (estimated) gradient by cosine matching, eqs. (3)-(6).

    Parameters
    ----------
    model:
        theta, the deployed model M (the gradient of the dummy samples is taken here). Used in
        eval mode; a float64 model is copied to float32 for the optimisation.
    target_gradient:
        One tensor per parameter of ``model``, pointing along +g (``estimate_gradient``); any scale.
    input_shape:
        Shape of one sample, ``(C, H, W)`` or ``(D,)``.
    num_classes:
        Number of classes of the classifier.
    num_forget:
        K, the number of removed samples recovered jointly.
    labels:
        ``(K,)`` true labels (known-label attack), or ``None`` (unknown: see ``config.label_strategy``).
    config:
        :class:`InversionConfig` (default: the active profile's).
    seed:
        Seeds the random initialisations.
    monitor:
        Optional ``monitor(restart_offset, iteration, x)`` called after every step with the current
        inputs ``(R, K, ...)`` (the benchmark uses it to time when a PSNR threshold is reached).

    Returns
    -------
    :class:`InversionResult`. Used by chapter 3, the ``recover`` command and chapter 6.
    """
    config = (config or InversionConfig.for_profile()).validated()
    model = attack_model(model)
    target = list(target_gradient)
    target_unit = unit_target(model, target)
    device = target_unit.device
    if num_forget < 1:
        raise CourseError(f"num_forget must be at least 1; got {num_forget}.")
    input_shape = tuple(int(s) for s in input_shape)
    image = len(input_shape) == 3
    found = analytic_labels(target, num_classes, num_forget)
    label_known = labels is not None
    if label_known:
        labels_t = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
        if len(labels_t) != num_forget:
            raise CourseError(f"Got {len(labels_t)} labels for {num_forget} samples.")
        if int(labels_t.min()) < 0 or int(labels_t.max()) >= num_classes:
            raise CourseError(f"Labels must lie in 0..{num_classes - 1}.")
    elif config.label_strategy == "analytic":
        labels_t = found
    else:
        labels_t = None

    R, K = config.restarts, num_forget
    gen = torch.Generator().manual_seed(int(seed))
    x = _init_inputs((R, K) + input_shape, config.init, gen).to(device)
    if labels_t is not None and config.soft_known_label:
        # eq. (3)-(4) optimise the dummy label y' too: start it at the known label, let it move
        y_fixed = None
        z = (4.0 * F.one_hot(labels_t, num_classes).float()).to(device).expand(R, K, num_classes).contiguous()
    elif labels_t is not None:
        y_fixed = F.one_hot(labels_t, num_classes).float().to(device).expand(R, K, num_classes).contiguous()
        z = None
    else:
        y_fixed = None
        z = torch.zeros(R, K, num_classes, device=device)  # uniform soft label, as in Appendix B

    def loss_for(m: nn.Module, tv_weight: float = config.tv_weight) -> Callable:
        return model_loss(m, target_unit, tv_weight, image, config.layer_weighting)

    # the real model with the final TV weight: ranks the restarts and judges the sharpening
    loss_fn = loss_for(model, config.final_tv_weight)
    smooth = smoothed_model(model, config.smooth_beta) if image else model
    search_loss = loss_for(smooth)  # what Adam descends (TV scaled per step by config.tv_scale)
    linear = last_linear(model, num_classes)
    h = (classifier_input_estimate(target, num_classes, labels_t if labels_t is not None else found)
         if config.feature_iterations > 0 and linear is not None else None)
    feature_steps = config.feature_iterations if h is not None else 0
    sharpen_steps = config.sharpen_iterations if image and config.sharpen_beta > 0 else 0
    bar = tqdm(total=R * (config.iterations + feature_steps) + sharpen_steps, desc=f"inversion ({R} restart{'s' if R > 1 else ''}"
               f"{', batched' if config.batched and R > 1 else ''})", unit="restart-it",
               disable=not config.progress, leave=False)
    start = time.perf_counter()
    # batched: one vmapped chunk of all restarts; otherwise one restart after another (same maths)
    chunks = [list(range(R))] if config.batched else [[r] for r in range(R)]
    if h is not None:
        x = torch.cat([_feature_stage(model, linear, h, x[c], config, image, bar) for c in chunks])
    # the feature stage's images stay candidates (fixed labels only): the final pick below takes
    # the lowest attack loss of the real model over them and the refined images
    x_start = x.detach().clone() if h is not None and z is None else None
    y_start = y_fixed
    stage_lr = config.refine_lr if h is not None else config.lr
    parts = [optimise_restarts(search_loss, x[c], z[c] if z is not None else None,
                       y_fixed[c] if y_fixed is not None else None, config, bar, monitor, c[0], stage_lr)
             for c in chunks]
    x = torch.cat([p[0] for p in parts])
    z = torch.cat([p[1] for p in parts]) if z is not None else None
    y_fixed = torch.cat([p[2] for p in parts]) if y_fixed is not None else None
    history, spent = parts[0][3], sum(p[4] for p in parts)
    seconds = time.perf_counter() - start

    x = x.detach()
    y_final = F.softmax(z.detach(), dim=-1) if z is not None else y_fixed
    # score every restart on its final, projected input with the real model (no ground truth involved)
    final = torch.stack([loss_fn(x[r], y_final[r]).detach() for r in range(x.shape[0])])
    if x_start is not None:
        start_losses = torch.stack([loss_fn(x_start[r], y_start[r]).detach() for r in range(x_start.shape[0])])
        if float(start_losses.min()) < float(final.min()):
            x, y_final, final = x_start, y_start, start_losses
    best = int(torch.argmin(final))
    sharpened = False
    if sharpen_steps:
        start_sharpen = time.perf_counter()
        sharp = _sharpen(loss_for(smoothed_model(model, config.sharpen_beta), config.final_tv_weight), x[best],
                         y_final[best], config, bar)
        sharp_loss = loss_fn(sharp, y_final[best]).detach()
        if float(sharp_loss) < float(final[best]):
            x, final = x.clone(), final.clone()
            x[best], final[best] = sharp, sharp_loss
            sharpened = True
        seconds += time.perf_counter() - start_sharpen
    bar.close()
    if z is not None and labels_t is None:
        labels_out = z[best].argmax(dim=-1).cpu()
    else:
        labels_out = labels_t.cpu()
    tv_part = float(tv_term(x[best], config.final_tv_weight, image))
    cost = {"iterations": config.iterations, "feature_iterations": feature_steps,
            "sharpen_iterations": sharpen_steps, "sharpened": sharpened, "restarts": R,
            "restart_iterations": spent, "seconds": seconds,
            "iterations_per_second": config.iterations / seconds if seconds > 0 else float("inf"),
            "restart_iterations_per_second": spent / seconds if seconds > 0 else float("inf"),
            "batched": config.batched, "device": str(device)}
    return InversionResult(images=x[best].cpu(), labels=labels_out, loss=float(final[best]),
                           cosine=1.0 - (float(final[best]) - tv_part), restart_losses=final.cpu().tolist(),
                           all_images=x.cpu(), analytic_labels=found, label_known=label_known, cost=cost,
                           history=history)
