"""EraseDiff (Wu et al., 2025, "Erasing Undesirable Influence in Diffusion Models", CVPR); chapter 8.

EraseDiff casts unlearning as a constrained problem through the value function of the forgetting
objective:

    min_theta L_r(theta)   s.t.   q(theta) = L_f(theta) - min_phi L_f(phi) <= 0,

with L_r the DDPM loss on the retained data and L_f a loss that *deviates* the model's denoising of
the concept from the ground truth: the concept's images x with the concept's prompt c should be
denoised as if the prompt named an unrelated anchor concept c_a,
L_f(theta) = E || eps_theta(x_t | c) - sg[eps_theta(x_t | c_a)] ||^2. The first-order algorithm
(the authors' Stable Diffusion script, ``erasediff_cls.py``):

1. from the current theta_i, K passes of gradient descent on L_f give phi_K ~ argmin L_f; the mean
   forgetting loss of the last pass estimates min_phi L_f;
2. back at theta_i, each step descends L_r(theta) + lambda (L_f(theta) - L_f(phi_K)).

The authors' script keeps lambda fixed (``lambda_bome`` = 0.1; its adaptive rule is left empty), K =
2, Adam at 1e-5; their anchor is "a photo of a pokemon", a concept outside the erased class. The
course's vocabulary has nothing outside the ten digits, so the anchor is a fixed *other* digit's
prompts (by default the next digit, the alternative left in the same script). Course-scale epochs,
steps and learning rate were tuned on the chapter's digit model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ... import threads
from ...errors import CourseError
from ...models.t2i import DIGIT_WORDS, prompts_for
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, finish, generators, image_batch, noised,
                     retain_loss, trainable_copy)


def anchored_forget_loss(diffusion, model, concept: ConceptSet, anchor_prompts: list[str], batch_size: int,
                         gen, rng) -> torch.Tensor:
    """L_f: the concept's noised images denoised under c should match the (gradient-free) anchor prediction."""
    x0, _ = image_batch(concept.images, batch_size, gen)
    x0 = x0.to(model.device)
    x_t, t, _ = noised(diffusion, x0, gen)
    with torch.no_grad():
        target = model(x_t, t, model.encode([rng.choice(anchor_prompts) for _ in range(x0.shape[0])]))
    return F.mse_loss(model(x_t, t, model.encode(concept_prompts(concept, x0.shape[0], rng))), target)


@T2I_METHODS.register("EraseDiff", description="value-function constrained unlearning: retain loss + lambda (L_f - min L_f)",
                      source="Wu et al. 2025 (EraseDiff)", uses_data=True)
def erasediff(original, concept: ConceptSet, retain: RetainSet, *, epochs: int = 3, inner_passes: int = 2,
              forget_steps: int = 8, retain_steps: int = 20, lam: float = 1.0, lr: float = 1e-3, batch_size: int = 16,
              anchor: int | None = None, seed: int = 0, progress: bool = False):
    """EraseDiff (see the module docstring). ``anchor``: the anchor digit (default: the concept's next digit).

    One epoch = ``inner_passes`` x ``forget_steps`` descent steps on L_f from theta_i (then undone),
    then ``retain_steps`` steps on L_r + lam (L_f - min L_f).
    """
    anchor = (concept.label + 1) % len(DIGIT_WORDS) if anchor is None else int(anchor)
    if anchor == concept.label or not 0 <= anchor < len(DIGIT_WORDS):
        raise CourseError(f"EraseDiff's anchor must be another digit than the erased one (0-9); got {anchor}.")
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    model, params = trainable_copy(original, "full")
    opt = torch.optim.Adam(params, lr=lr)
    anchor_prompts = prompts_for(DIGIT_WORDS[anchor])
    bar = tqdm(range(epochs), desc="EraseDiff", disable=not progress, leave=False)
    for _ in bar:
        theta_i = [p.detach().clone() for p in params]
        for _ in range(inner_passes):                     # [1] phi_K: K passes of descent on L_f
            pass_losses = []
            for _ in range(forget_steps):
                threads.adapt()
                loss_f = anchored_forget_loss(diffusion, model, concept, anchor_prompts, batch_size, gen, rng)
                opt.zero_grad(set_to_none=True)
                loss_f.backward()
                opt.step()
                pass_losses.append(float(loss_f.detach()))
        f_star = sum(pass_losses) / len(pass_losses)      # estimate of min_phi L_f
        with torch.no_grad():                              # back to theta_i
            for p, p0 in zip(params, theta_i):
                p.copy_(p0)
        for _ in range(retain_steps):                      # [2] L_r + lambda q(theta)
            threads.adapt()
            q = anchored_forget_loss(diffusion, model, concept, anchor_prompts, batch_size, gen, rng) - f_star
            loss = retain_loss(diffusion, model, retain, batch_size, gen, rng) + lam * q
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return finish(model)
