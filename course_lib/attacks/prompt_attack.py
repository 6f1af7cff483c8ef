"""The adversarial prompt attack on an unlearned diffusion model (RUB eq. 3, UnlearnDiffAtk); chapter 8.

RUB instantiates its Unlearning Mapping Attack for text-to-image models as (Section 4.4, eq. 3)

    min_delta  E_t || eps_{theta_u}(x_t | delta) - eps_theta(x_t | c) ||,

where x_t is a noised image of the erased concept, c its prompt, theta the original model and
theta_u the unlearned one, and adopts the gradient-based attack of UnlearnDiffAtk (Zhang et al.,
2024d) to solve it. The course's instance, for each target image x_0 of the concept (generated
by the original model from a recorded seed):

Threat model (token level)
    delta is ``tokens`` soft token embeddings prepended to the concept's own prompt, as
    UnlearnDiffAtk's ``prefix_k`` insertion (k = 3 in its object configurations):
    ``[<start>, delta_1..delta_k, "a", "handwritten", "seven", <end>, ...]`` goes through the
    unlearned model's text encoder. The attacker chooses continuous vectors in the token-embedding
    space (AdvUnlearn's soft "word embedding" attack); UnlearnDiffAtk additionally projects them onto
    real vocabulary tokens, which the course does not do. ``max_norm`` (an option, off by default)
    caps each soft token's norm at a multiple of the largest vocabulary embedding norm.
    ``space="context"`` is a stronger threat model, for comparison only: the attacker replaces the
    text encoder's whole output (the context the denoiser reads) by free vectors, initialised at the
    concept prompt's context.
Objective
    The mean squared error between the unlearned model's noise prediction under the attacked
    prompt and the *original* model's prediction under the concept prompt (eq. 3, RUB's target;
    UnlearnDiffAtk's own code compares with the true noise). E_t is estimated at every step with
    ``timesteps_per_step`` timesteps, one drawn in each of as many equal strata of [0, T), with
    fresh noise (the standard stratified estimate of the expectation).
Optimiser
    Adam on delta, learning rate ``lr`` (UnlearnDiffAtk: Adam, 1e-2 on its token distribution).
Success and step count (UnlearnDiffAtk's protocol)
    After every step the unlearned model samples an image from the target's own seed with the
    attacked prompt (DDIM, the same steps and guidance as the targets) and the evaluation classifier
    C decides whether it shows the concept. A target counts ``0`` steps if the plain prompt already
    gives the concept (pre-attack success), the first step at which C sees the concept otherwise,
    and the cap ``steps`` if it never does. ASR = share of targets with success.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import threads
from ..diffusion import Diffusion, seeded_noise, to_model_space
from ..errors import CourseError
from ..models.t2i import T2IModel


def prefix_embeddings(model: T2IModel, prompt_ids: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """Token embeddings ``(B, L, D)`` of ``[<start>, delta, prompt words, <end>...]`` (prefix insertion).

    ``prompt_ids`` ``(B, L)`` are the concept prompt's ids, ``delta`` ``(B, k, D)`` the soft tokens;
    the sequence keeps length L (the last k ``<end>`` paddings drop out).
    """
    emb = model.text_encoder.embed(prompt_ids)
    k = delta.shape[1]
    return torch.cat([emb[:, :1], delta, emb[:, 1:emb.shape[1] - k]], dim=1)


def attacked_context(model: T2IModel, prompt_ids: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """The context ``(B, L, D)`` the unlearned model sees for the attacked prompt."""
    return model.text_encoder(prompt_ids, inputs_embeds=prefix_embeddings(model, prompt_ids, delta))


def attack_objective(unlearned: T2IModel, x_t: torch.Tensor, t: torch.Tensor, adv_context: torch.Tensor,
                     target_eps: torch.Tensor) -> torch.Tensor:
    """Eq. 3's inner term per sample ``(B,)``: mean over pixels of (eps_u(x_t | delta) - target)^2.

    ``adv_context`` is :func:`attacked_context` of the soft tokens delta, ``target_eps`` the
    original model's eps_theta(x_t | c) (no gradient). AdvUnlearn's inner attack
    (:mod:`course_lib.unlearn.t2i.advunlearn`) minimises this same function.
    """
    eps = unlearned(x_t, t, adv_context)
    return (eps - target_eps).pow(2).flatten(1).mean(1)


def init_soft_tokens(model: T2IModel, batch: int, tokens: int, generator: torch.Generator) -> torch.Tensor:
    """``(batch, tokens, D)`` embeddings of random vocabulary words (AdvUnlearn's initialisation)."""
    table = model.text_encoder.token_embedding.weight.detach()
    ids = torch.randint(2, table.shape[0], (batch, tokens), generator=generator)
    return table[ids.to(table.device)].clone()


def project_norm(delta: torch.Tensor, max_norm: float | None) -> torch.Tensor:
    """Each token of ``delta`` scaled down to norm ``max_norm`` if longer (in place); ``None``: unchanged."""
    if max_norm is not None:
        with torch.no_grad():
            norms = delta.norm(dim=-1, keepdim=True).clamp_min(1e-12)
            delta.mul_(torch.clamp(max_norm / norms, max=1.0))
    return delta


@dataclass
class PromptAttackResult:
    """Per target: whether the concept came back and after how many steps (UnlearnDiffAtk's count).

    ``steps[i]``: 0 = already with the plain prompt, s = at step s, ``cap`` = never (then
    ``success[i]`` is False). ``images_before`` / ``images_after``: the unlearned model's samples
    from the target's seed with the plain prompt and with the final attacked prompt ``(N, C, H, W)``.
    """

    success: torch.Tensor
    pre_success: torch.Tensor
    steps: torch.Tensor
    cap: int
    images_before: torch.Tensor
    images_after: torch.Tensor
    seconds: float
    step_seconds: float
    loss_curve: list = field(default_factory=list)

    @property
    def pre_asr(self) -> float:
        return float(self.pre_success.float().mean()) if len(self.success) else float("nan")

    @property
    def post_asr(self) -> float:
        return float(self.success.float().mean()) if len(self.success) else float("nan")

    def summary(self) -> dict:
        return {**attack_statistics(self.steps, self.success), "cap": self.cap,
                "steps": [int(v) for v in self.steps], "seconds": round(self.seconds, 3),
                "seconds_per_step": round(self.step_seconds, 5)}


def attack_statistics(steps, success) -> dict:
    """UnlearnDiffAtk's numbers from per-target step counts and success flags.

    ``steps[i]`` is 0 for a target the plain prompt already gave (a pre-attack success), the step
    of the first success otherwise, and the cap for a target never reached (``success[i]`` False;
    a target reached exactly at the cap also counts the cap, hence the flags). Returns the
    pre-attack ASR (share with 0 steps), the post-attack ASR (share of successes) and the mean
    and median step counts.
    """
    s = np.asarray(steps, dtype=float).reshape(-1)
    ok = np.asarray(success, dtype=bool).reshape(-1)
    if len(s) == 0 or len(s) != len(ok):
        raise CourseError(f"Give one step count and one success flag per target; got {len(s)} and {len(ok)}.")
    return {"pre_asr": float(np.mean((s == 0) & ok)), "post_asr": float(ok.mean()), "mean_steps": float(s.mean()),
            "median_steps": float(np.median(s))}


def unlearn_diff_attack(original: T2IModel, unlearned: T2IModel, diffusion: Diffusion, classifier,
                        target_images: torch.Tensor, prompts: list[str], seeds: list[int], concept_label: int, *,
                        steps: int = 100, tokens: int = 3, lr: float = 0.05, timesteps_per_step: int = 4,
                        sample_steps: int = 10, guidance: float = 2.0, max_norm: float | None = None,
                        space: str = "token", seed: int = 0, progress: bool = False) -> PromptAttackResult:
    """Run RUB's eq. 3 attack with UnlearnDiffAtk's success check on every target; chapter 8.

    Parameters
    ----------
    original, unlearned:
        The model before unlearning (its prediction under the concept's prompt is eq. 3's target)
        and the unlearned model under attack; neither is modified.
    target_images:
        ``(N, C, H, W)`` in [0, 1]: the original model's images of the concept.
    prompts, seeds:
        Each target's concept prompt and the seed its initial noise was drawn from.
    classifier:
        The evaluation classifier C (:class:`~course_lib.evaluator.EvaluationClassifier`).
    steps:
        The cap on attack steps (RUB: 100).
    tokens, lr, timesteps_per_step, max_norm:
        Soft tokens k, Adam's learning rate, timesteps per estimate of E_t, optional norm cap (a
        multiple of the largest vocabulary embedding norm).
    space:
        ``"token"`` (the threat model of the chapter: soft tokens through the text encoder) or
        ``"context"`` (the stronger post-encoder comparison: the context itself is optimised).
    sample_steps, guidance:
        The DDIM sampler of the success check (the one that generated the targets).
    """
    n = len(target_images)
    if n == 0:
        raise CourseError("The attack needs at least one target image of the erased concept.")
    if len(prompts) != n or len(seeds) != n:
        raise CourseError(f"Give one prompt and one seed per target image; got {n} images, {len(prompts)} prompts "
                          f"and {len(seeds)} seeds.")
    if space not in ("token", "context"):
        raise CourseError(f"The attack's space is 'token' (soft prompt tokens) or 'context' (post-encoder); got {space!r}.")
    if steps < 1 or tokens < 1 or timesteps_per_step < 1:
        raise CourseError(f"steps, tokens and timesteps_per_step must be >= 1; got {steps}, {tokens}, {timesteps_per_step}.")
    t_start = time.perf_counter()
    device = unlearned.device
    unlearned.eval()
    original.eval()
    for p in list(unlearned.parameters()) + list(original.parameters()):
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(int(seed))
    ids = unlearned.tokenizer.encode(prompts, extra_tokens=tokens).to(device)
    noise0 = seeded_noise(seeds, unlearned.image_shape, device)
    x0 = to_model_space(target_images.to(device))
    null = unlearned.null_context(1)

    def sample_with(ctx, rows):
        return diffusion.sample(unlearned, ctx, noise0[rows], steps=sample_steps, guidance=guidance, null=null)

    with torch.no_grad():
        before = sample_with(unlearned.encode(prompts), torch.arange(n, device=device))
        pre = classifier.predict(before).cpu() == concept_label
        target_ctx = original.encode(prompts)
    scale = None
    if max_norm is not None and space == "token":
        scale = float(max_norm) * float(unlearned.text_encoder.token_embedding.weight.norm(dim=1).max())
    if space == "token":
        delta = project_norm(init_soft_tokens(unlearned, n, tokens, gen).to(device), scale).requires_grad_(True)
    else:
        with torch.no_grad():
            delta = unlearned.encode(prompts).clone().requires_grad_(True)

    def context_of(rows):
        return attacked_context(unlearned, ids[rows], delta[rows]) if space == "token" else delta[rows]

    opt = torch.optim.Adam([delta], lr=lr)
    success = pre.clone()
    count = torch.full((n,), steps, dtype=torch.long)
    count[pre] = 0
    after = before.clone()
    curve, step_time, n_steps = [], 0.0, 0
    T = diffusion.num_train_timesteps
    bar = tqdm(range(1, steps + 1), desc="prompt attack", disable=not progress, leave=False)
    for step in bar:
        active = torch.nonzero(~success).flatten()
        if len(active) == 0:
            break
        threads.adapt()
        t0 = time.perf_counter()
        rows = active.to(device)
        k, b = timesteps_per_step, len(active)
        strata = (torch.arange(k).repeat_interleave(b) + torch.rand(k * b, generator=gen)) * (T / k)
        t = strata.long().clamp_(0, T - 1).to(device)
        eps = torch.randn((k * b,) + tuple(x0.shape[1:]), generator=gen).to(device)
        x_t = diffusion.add_noise(x0[rows].repeat(k, 1, 1, 1), eps, t)
        with torch.no_grad():
            target = original(x_t, t, target_ctx[rows].repeat(k, 1, 1))
        adv_ctx = context_of(rows).repeat(k, 1, 1)
        loss = attack_objective(unlearned, x_t, t, adv_ctx, target)
        opt.zero_grad(set_to_none=True)
        loss.mean().backward()
        opt.step()
        project_norm(delta, scale)
        step_time += time.perf_counter() - t0
        n_steps += 1
        curve.append(float(loss.detach().mean()))
        with torch.no_grad():
            imgs = sample_with(context_of(rows), rows)
            hit = classifier.predict(imgs).cpu() == concept_label
        after[rows] = imgs
        newly = active[hit]
        success[newly] = True
        count[newly] = step
        bar.set_postfix_str(f"ASR {float(success.float().mean()):.2f}")
    bar.close()
    return PromptAttackResult(success, pre, count, steps, before.cpu(), after.cpu(), time.perf_counter() - t_start,
                              step_time / max(1, n_steps), curve)
