"""SalUn for diffusion models (Fan et al., 2024, "SalUn: Empowering Machine Unlearning via Gradient-based
Weight Saliency", Sections 4-5); chapter 8.

1. **Weight saliency** (eq. 6): the mask m_S = 1(|grad_theta l_f(theta; D_f)| >= gamma) keeps the
   ``mask_ratio`` share of the denoiser's weights with the largest forgetting-loss gradient
   magnitude, l_f being the diffusion loss on the concept's images with the concept's prompts,
   accumulated over ``mask_batches`` batches at the original weights theta_0. Only these weights move:
   theta_u = m_S . (theta_0 + Delta theta) + (1 - m_S) . theta_0 (eq. 7).
2. **Random labelling with a retain term** (eq. 8, the diffusion form): each concept image x with
   its prompt c gets a different class's prompt c' at random, and

       L = E_{(x, c) in D_f, t, eps, c' != c} || eps_theta(x_t | c') - eps_theta(x_t | c) ||^2 + beta l_MSE(theta; D_r),

   where l_MSE is the DDPM loss on the retained classes. As in the authors' Stable Diffusion script
   (``random_label.py``) the c' branch is the target: it is computed without gradient.

The authors' SD settings: mask ratio 0.5, Adam at 1e-5, alpha (beta here) 0.5, 5 epochs of the
forget set, batch 8. Course-scale defaults keep the mask ratio and the loss; steps, learning rate and
beta were tuned on the chapter's digit model.

The official mask script ranks ``ranks < threshold_index`` of an ascending sort, which keeps the
*smallest* gradients; the paper's eq. 6 keeps the largest, and so does this implementation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ... import threads
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, finish, generators, image_batch, noised,
                     parameter_group, retain_loss, top_share_masks, trainable_copy)


def saliency_mask(original, concept: ConceptSet, *, mask_ratio: float = 0.5, batches: int = 4, batch_size: int = 32,
                  group: str = "full", seed: int = 0) -> dict[str, torch.Tensor]:
    """Eq. 6: ``{parameter name: bool mask}`` selecting the ``mask_ratio`` share of ``group``'s weights with the
    largest |gradient| of the concept's diffusion loss at the original weights (one global threshold)."""
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    model, params = trainable_copy(original, group)
    named = parameter_group(model, group)
    grads = [torch.zeros_like(p) for _, p in named]
    images = concept.images.to(model.device)
    for _ in range(batches):
        x0, _ = image_batch(images, batch_size, gen)
        x_t, t, eps = noised(diffusion, x0, gen)
        loss = F.mse_loss(model(x_t, t, model.encode(concept_prompts(concept, x0.shape[0], rng))), eps)
        for g, gi in zip(grads, torch.autograd.grad(loss, params)):
            g += gi
    masks = top_share_masks([g.abs() for g in grads], mask_ratio)
    return {n: m for (n, _), m in zip(named, masks)}


@T2I_METHODS.register("SalUn", description="saliency mask + random other-class prompt target + retain DDPM loss",
                      source="Fan et al. 2024, eqs. 6-8", uses_data=True)
def salun(original, concept: ConceptSet, retain: RetainSet, *, mask_ratio: float = 0.5, steps: int = 60,
          lr: float = 1e-3, batch_size: int = 16, beta: float = 2.0, seed: int = 0, progress: bool = False):
    """SalUn for diffusion (see the module docstring)."""
    diffusion = diffusion_of(original)
    mask = saliency_mask(original, concept, mask_ratio=mask_ratio, seed=seed)
    gen, rng = generators(seed)
    model, params = trainable_copy(original, "full")
    named = parameter_group(model, "full")
    masks = [mask[n].to(p.dtype) for n, p in named]
    opt = torch.optim.Adam(params, lr=lr)
    others = sorted(retain.prompts_by_label)
    images = concept.images.to(model.device)
    for _ in tqdm(range(steps), desc="SalUn", disable=not progress, leave=False):
        threads.adapt()
        x0, _ = image_batch(images, batch_size, gen)
        x_t, t, _ = noised(diffusion, x0, gen)
        prompts = concept_prompts(concept, x0.shape[0], rng)
        pseudo = [rng.choice(retain.prompts_by_label[rng.choice(others)]) for _ in prompts]
        with torch.no_grad():
            target = model(x_t, t, model.encode(pseudo))
        loss = F.mse_loss(model(x_t, t, model.encode(prompts)), target)
        loss = loss + beta * retain_loss(diffusion, model, retain, batch_size, gen, rng)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for p, m in zip(params, masks):
            p.grad.mul_(m)
        opt.step()
    # eq. 7 as a hard constraint: Adam's moments never touch a masked-out weight (its gradient is 0
    # from the first step), and the copy below makes that exact
    with torch.no_grad():
        for (n, p), (_, p0), m in zip(named, parameter_group(original, "full"), masks):
            p.copy_(torch.where(m.bool(), p, p0))
    return finish(model)
