"""ESD: Erased Stable Diffusion (Gandikota et al., 2023, "Erasing Concepts from Diffusion Models"); chapter 8.

ESD fine-tunes the model so that its prediction under the concept prompt c becomes the frozen
original's *negatively guided* prediction (Section 3, eq. 5 of the paper):

    L_ESD = || eps_theta'(x_t, c, t) - [ eps_theta(x_t, t) - eta (eps_theta(x_t, c, t) - eps_theta(x_t, t)) ] ||^2

with theta' the model being trained, theta the frozen original, eps(x_t, t) the unconditional
(null-prompt) prediction and eta the negative guidance (paper: 1). x_t is not a noised training
image: it is sampled by the model being trained, DDIM from noise under c with guidance
``start_guidance`` (the authors' code: 3) for a random number t_enc of the ``ddim_steps`` steps,
so the erasure acts where the model's own generation of the concept goes. ESD needs no data, only
the prompt.

Variants (Section 4 of the paper): **ESD-x** fine-tunes only the cross-attention (``attn2``),
erasing what the prompt *says* (the paper's choice for artistic styles); **ESD-u** fine-tunes
every other denoiser weight (not ``attn2``, the time embedding or the output layer), erasing the
concept unconditionally (the paper's choice for nudity and objects; UnlearnDiffAtk and RUB attack
ESD-u models for their object concepts, hence the default ``variant="u"``).

Course-scale values (``steps``, ``lr``, ``batch_size``, ``ddim_steps``): the paper trains 1000
iterations of Adam at 1e-5, batch 1, with 50 DDIM steps, on Stable Diffusion. The defaults here
were tuned on the chapter's digit model so that the concept's samples stop being recognised while
the other digits stay recognisable. ESD-u changes weights every class shares, so it is the variant
that costs the other digits most; a coarse 5-step sampler for x_t keeps its training on the noisy
steps, where the digit is decided (with the 10 steps of the chapter's sampler, erasing as far cost
more of the other digits).
"""
from __future__ import annotations

import torch.nn.functional as F
import torch
from tqdm.auto import tqdm

from ... import threads
from ...errors import CourseError
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, esd_target, finish, frozen, generators,
                     partial_samples, trainable_copy)


@T2I_METHODS.register("ESD", description="ESD-u: negative guidance on the concept prompt, non-cross-attention weights",
                      source="Gandikota et al. 2023, eq. 5", uses_data=False)
def esd(original, concept: ConceptSet, retain: RetainSet, *, variant: str = "u", eta: float = 1.0, steps: int = 60,
        lr: float = 5e-5, batch_size: int = 24, ddim_steps: int = 5, start_guidance: float = 3.0, seed: int = 0,
        progress: bool = False):
    """ESD (Gandikota et al., 2023): ``variant`` ``"u"`` (ESD-u) or ``"x"`` (ESD-x); see the module docstring."""
    if variant not in ("u", "x"):
        raise CourseError(f"ESD's variant is 'u' (ESD-u, non-cross-attention) or 'x' (ESD-x, cross-attention); got {variant!r}.")
    return esd_finetune(original, concept, group="noxattn" if variant == "u" else "xattn", eta=eta, steps=steps, lr=lr,
                        batch_size=batch_size, ddim_steps=ddim_steps, start_guidance=start_guidance, seed=seed,
                        progress=progress, desc=f"ESD-{variant}")


def esd_finetune(original, concept: ConceptSet, *, group: str, eta: float, steps: int, lr: float, batch_size: int,
                 ddim_steps: int, start_guidance: float, seed: int, progress: bool, desc: str = "ESD"):
    """The ESD loop on parameter ``group`` (shared by ESD-u, ESD-x)."""
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    teacher = frozen(original.copy())
    model, params = trainable_copy(original, group)
    opt = torch.optim.Adam(params, lr=lr)
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        threads.adapt()
        prompts = concept_prompts(concept, batch_size, rng)
        with torch.no_grad():
            ctx = model.encode(prompts)
        x_t, t = partial_samples(diffusion, model, ctx, ddim_steps=ddim_steps, guidance=start_guidance, gen=gen)
        target = esd_target(teacher, x_t, t, prompts, eta)
        loss = F.mse_loss(model(x_t, t, ctx), target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return finish(model)
