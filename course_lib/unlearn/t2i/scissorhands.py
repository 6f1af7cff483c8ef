"""Scissorhands (Wu & Harandi, 2024, "Scissorhands: Scrub Data Influence via Connection Sensitivity in
Networks", ECCV); chapter 8.

1. **Connection sensitivity** (SNIP, Lee et al. 2019): for every weight, s_j = |g_j theta_j| with g the
   gradient of the concept's diffusion loss, accumulated (in absolute value) over ``prune_batches``
   batches of the concept's images. As in the authors' Stable Diffusion script (``shs_cls.py``) the
   loss is taken on the classifier-free-guided prediction (1 + w) eps(x_t | c) - w eps(x_t | null),
   w = ``guidance`` (7.5 there).
2. **Trim**: the ``1 - sparsity`` share of weights with the largest s_j (one global threshold) are
   re-initialised: weights from a truncated normal with standard deviation 0.02, biases to 0, as the
   script does. The paper describes trimming the whole network; the released Stable Diffusion script
   trims attention layers only (``attn1`` of two output blocks). ``trim="attention"`` (the default)
   follows the script at this scale: the projections of every self- and cross-attention layer;
   ``trim="all"`` ranks every convolution and linear layer. On the chapter's model the most sensitive
   weights of the whole network include the input and output convolutions, shared by every class;
   re-initialising them breaks every digit, and the short fine-tuning does not repair it.
3. **Fine-tune** the trimmed model on L_r - lambda L_u (the DDPM loss on the retained data minus
   lambda times the concept's), with the paper's **gradient projection**: when the update direction g
   would lower the concept's loss (<g, g_u> < 0 for g_u = -grad L_u), it is projected onto the
   half-space <g, g_u> >= 0, g <- g - (<g, g_u> / ||g_u||^2) g_u (the closed form of GEM's quadratic
   program with one memory; the script solves the QP with ``quadprog``).

The authors' class-wise SD run: sparsity 0.999, 10 SNIP batches, lambda 0.1, Adam at 2e-5, 3 epochs.
Course-scale sparsity, steps and learning rate were tuned on the chapter's digit model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ... import threads
from ...errors import CourseError
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, finish, generators, image_batch, noised,
                     retain_loss, top_share_masks, trainable_copy)


def _prunable(model, trim: str = "attention") -> list[tuple[str, nn.Parameter]]:
    """Weights and biases that may be trimmed: the attention layers' projections (``"attention"``: the
    linear layers inside every ``attn1`` / ``attn2``) or every convolution and linear layer (``"all"``)."""
    if trim not in ("attention", "all"):
        raise CourseError(f"Scissorhands trims 'attention' or 'all' layers; got {trim!r}.")
    out = []
    for name, module in model.denoiser.named_modules():
        inside = any(part in ("attn1", "attn2") for part in name.split("."))
        if isinstance(module, (nn.Conv2d, nn.Linear)) and (trim == "all" or inside):
            out += [(f"{name}.{n}", p) for n, p in module.named_parameters(recurse=False)]
    return out


def concept_loss(diffusion, model, concept: ConceptSet, batch_size: int, gen, rng, guidance: float | None = None):
    """The DDPM loss on the concept's images with its prompts; with ``guidance`` w, on the guided prediction."""
    x0, _ = image_batch(concept.images, batch_size, gen)
    x0 = x0.to(model.device)
    x_t, t, eps = noised(diffusion, x0, gen)
    pred = model(x_t, t, model.encode(concept_prompts(concept, x0.shape[0], rng)))
    if guidance is not None:
        pred = (1 + guidance) * pred - guidance * model(x_t, t, model.null_context(x0.shape[0]))
    return F.mse_loss(pred, eps)


def connection_sensitivity(model, concept: ConceptSet, *, batches: int, batch_size: int, guidance: float,
                           seed: int, trim: str = "attention") -> list[torch.Tensor]:
    """SNIP saliency |g . theta| of every prunable parameter (same order as :func:`_prunable`)."""
    diffusion = diffusion_of(model)
    gen, rng = generators(seed)
    named = _prunable(model, trim)
    params = [p for _, p in named]
    for p in params:
        p.requires_grad_(True)
    acc = [torch.zeros_like(p) for p in params]
    for _ in range(batches):
        loss = concept_loss(diffusion, model, concept, batch_size, gen, rng, guidance)
        for a, g in zip(acc, torch.autograd.grad(loss, params)):
            a += g.abs()
    return [(a * p.detach()).abs() for a, p in zip(acc, params)]


@T2I_METHODS.register("Scissorhands", description="SNIP connection sensitivity, re-initialise the top weights, "
                                                  "fine-tune with gradient projection",
                      source="Wu & Harandi 2024 (Scissorhands)", uses_data=True)
def scissorhands(original, concept: ConceptSet, retain: RetainSet, *, sparsity: float = 0.99, prune_batches: int = 4,
                 guidance: float = 7.5, lam: float = 0.1, steps: int = 30, lr: float = 2e-4, batch_size: int = 16,
                 project: bool = True, trim: str = "attention", seed: int = 0, progress: bool = False):
    """Scissorhands (see the module docstring): trim the (1 - ``sparsity``) most concept-sensitive weights."""
    diffusion = diffusion_of(original)
    model, params = trainable_copy(original, "full")
    sens = connection_sensitivity(model, concept, batches=prune_batches, batch_size=batch_size, guidance=guidance,
                                  seed=seed, trim=trim)
    chosen = top_share_masks(sens, 1 - sparsity)
    gen, rng = generators(seed + 1)
    with torch.no_grad():
        for (name, p), trimmed in zip(_prunable(model, trim), chosen):
            fresh = torch.zeros_like(p) if name.endswith("bias") else \
                nn.init.trunc_normal_(torch.empty_like(p), std=0.02, generator=gen)
            p.copy_(torch.where(trimmed, fresh, p))
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in tqdm(range(steps), desc="Scissorhands", disable=not progress, leave=False):
        threads.adapt()
        loss_u = concept_loss(diffusion, model, concept, batch_size, gen, rng)
        loss_r = retain_loss(diffusion, model, retain, batch_size, gen, rng)
        g_u = [-g for g in torch.autograd.grad(loss_u, params, retain_graph=True)]   # ascent direction of L_u
        opt.zero_grad(set_to_none=True)
        (loss_r - lam * loss_u).backward()
        if project:
            dot = sum((p.grad * gu).sum() for p, gu in zip(params, g_u))
            if dot < 0:   # the step would lower the concept's loss: project onto <g, g_u> >= 0
                norm2 = sum((gu * gu).sum() for gu in g_u).clamp_min(1e-20)
                for p, gu in zip(params, g_u):
                    p.grad.sub_(dot / norm2 * gu)
        opt.step()
    return finish(model)
