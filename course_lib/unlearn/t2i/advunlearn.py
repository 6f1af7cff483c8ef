"""AdvUnlearn (Zhang et al., 2024, "Defensive Unlearning with Adversarial Training for Robust Concept
Erasure in Diffusion Models", NeurIPS); chapter 8.

AdvUnlearn makes ESD robust by adversarial training, and finds that the module to train is the
**text encoder** (the denoiser stays the original). The bi-level problem (its eq. 5):

    min_theta  l_u(theta, c*) + gamma l_r(theta, C_retain)
    s.t.       c* = argmin_{c'} l_atk(theta, c'),

* the upper level is ESD's loss with the *adversarial* prompt: the frozen denoiser, reading the
  context that the trained text encoder makes of c*, should predict ESD's negatively guided target
  eps(x_t | null) - eta (eps(x_t | c) - eps(x_t | null)) of the original;
* the utility term l_r keeps, for retain prompts c~, the trained encoder's context giving the
  original model's prediction: || eps(x_t | enc_theta(c~)) - eps_orig(x_t | c~) ||^2;
* the lower level is the attack of :mod:`course_lib.attacks.prompt_attack` itself: ``tokens`` soft
  tokens prepended to the concept prompt, optimised by Adam on eq. 3's objective
  || eps_theta(x_t | c') - eps_orig(x_t | c) ||^2 (:func:`~course_lib.attacks.prompt_attack.attack_objective`),
  warm-started from the previous round (the authors' ``attack_init = latest``).

x_t is ESD's: partially sampled by the (frozen) denoiser under the concept prompt, guidance 3, a new
batch at every step. An attack round takes all its steps on that step's batch, with one soft prompt
per sample (the authors attack one prompt at a time and draw a new x_t at every attack step). The
authors' settings: 1000 iterations, 200 of warm-up without attack, a new adversarial prompt every
20 iterations from 30 attack steps, Adam at 1e-5 on the text encoder, retain weight 1, retain batch
5 prompts. Course-scale values were tuned on the chapter's digit model.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ... import threads
from ...attacks.prompt_attack import attack_objective, attacked_context, init_soft_tokens
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, esd_target, finish, frozen, generators,
                     partial_samples, trainable_copy)


@T2I_METHODS.register("AdvUnlearn", description="adversarial training of the text encoder: ESD loss on the attack's "
                                                "prompt + retain regulariser",
                      source="Zhang et al. 2024 (AdvUnlearn), eq. 5", uses_data=False)
def advunlearn(original, concept: ConceptSet, retain: RetainSet, *, steps: int = 80, lr: float = 1e-3,
               batch_size: int = 16, warmup: int = 10, attack_every: int = 5, attack_steps: int = 30,
               attack_lr: float = 0.05, tokens: int = 3, retain_weight: float = 5.0, retain_batch: int = 16,
               eta: float = 1.0, ddim_steps: int = 10, start_guidance: float = 3.0, seed: int = 0,
               progress: bool = False):
    """AdvUnlearn (see the module docstring): adversarial training of the text encoder."""
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    teacher = frozen(original.copy())
    model, params = trainable_copy(original, "text_encoder")
    opt = torch.optim.Adam(params, lr=lr)
    kw = dict(ddim_steps=ddim_steps, guidance=start_guidance, gen=gen)
    retain_prompts = retain.prompts()
    delta = None
    for step in tqdm(range(steps), desc="AdvUnlearn", disable=not progress, leave=False):
        threads.adapt()
        batch = _concept_batch(diffusion, teacher, model, concept_prompts(concept, batch_size, rng), eta, tokens, kw)
        prompts, ids, x_t, t, target, _ = batch
        if step >= warmup and (step - warmup) % attack_every == 0:
            delta = _attack(model, batch, delta, tokens=tokens, steps=attack_steps, lr=attack_lr, gen=gen)
        ctx = model.encode(prompts) if delta is None else attacked_context(model, ids, delta)
        loss = F.mse_loss(model(x_t, t, ctx), target)   # model's denoiser is the original's, frozen
        if retain_weight > 0:
            rp, xr, tr, keep = _retain_batch(diffusion, teacher, [rng.choice(retain_prompts) for _ in range(retain_batch)],
                                             kw)
            loss = loss + retain_weight * F.mse_loss(model(xr, tr, model.encode(rp)), keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return finish(model)


def _concept_batch(diffusion, teacher, model, prompts: list[str], eta: float, tokens: int, kw: dict) -> tuple:
    """``(prompts, ids, x_t, t, ESD target, eps_orig(x_t | c))`` of one batch of the concept's prompts."""
    with torch.no_grad():
        ctx = teacher.encode(prompts)
    x_t, t = partial_samples(diffusion, teacher, ctx, **kw)
    with torch.no_grad():
        eps_c = teacher(x_t, t, ctx)
    ids = model.tokenizer.encode(prompts, extra_tokens=tokens).to(model.device)
    return prompts, ids, x_t, t, esd_target(teacher, x_t, t, prompts, eta), eps_c


def _retain_batch(diffusion, teacher, prompts: list[str], kw: dict) -> tuple:
    """``(prompts, x_t, t, eps_orig(x_t | c~))`` of one batch of retain prompts."""
    with torch.no_grad():
        ctx = teacher.encode(prompts)
    x_t, t = partial_samples(diffusion, teacher, ctx, **kw)
    with torch.no_grad():
        return prompts, x_t, t, teacher(x_t, t, ctx)


def _attack(model, batch: tuple, delta, *, tokens: int, steps: int, lr: float, gen) -> torch.Tensor:
    """The lower level: ``steps`` Adam steps of the prompt attack's objective on one batch, one soft
    prompt ``(tokens, D)`` per sample, against the current text encoder (warm start from ``delta``)."""
    prompts, ids, x_t, t, _, eps_c = batch
    for p in model.text_encoder.parameters():
        p.requires_grad_(False)
    start = init_soft_tokens(model, len(prompts), tokens, gen) if delta is None else delta.detach().clone()
    adv = start.requires_grad_(True)
    opt = torch.optim.Adam([adv], lr=lr)
    for _ in range(steps):
        loss = attack_objective(model, x_t, t, attacked_context(model, ids, adv), eps_c).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in model.text_encoder.parameters():
        p.requires_grad_(True)
    return adv.detach()
