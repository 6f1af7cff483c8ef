"""SPM: concept semi-permeable membranes (Lyu et al., 2024, "One-Dimensional Adapter to Rule Them All:
Concepts, Diffusion Models and Erasing Applications", CVPR); chapter 8.

SPM freezes the model and trains a **one-dimensional adapter** (a rank-1 LoRA, W + up . down with
``up`` initialised to 0, alpha = rank = 1) on every linear and convolution layer inside the
denoiser's transformer blocks (diffusers' ``Transformer2DModel``; the course's
:class:`~course_lib.models.denoiser.TransformerBlock`). Its loss (the authors' ``train_spm.py``):

    L = || eps_A(x_t | c) - [eps(x_t | null) - g (eps(x_t | c) - eps(x_t | null))] ||^2
        + lambda_LA E_{c~} || eps_A(x_t | c~) - eps(x_t | c~) ||^2,

the erasing term ESD's negatively guided target (g = 1) with x_t partially sampled by the adapted
model under c (guidance 3), and **latent anchoring**: random prompt contexts c~ drawn around the
concept's own context (a Gaussian direction, accepted with probability 1 - cos(c~, c), rescaled to
0.8-1.2 times the norm of c) must keep the frozen model's prediction, with strength lambda_LA (1000
in the authors' configurations), so that other concepts pass the membrane unchanged.

At inference the authors scale the adapter by a *facilitated transport* factor computed from the
prompt's similarity to the erased concept. RUB and UnlearnDiffAtk evaluate SPM as a fixed U-Net
checkpoint, i.e. with the adapter merged at full strength, which is what this function returns (the
adapter merged into the weights: the result has the original architecture).

Course-scale values were tuned on the chapter's digit model (the authors train 3000 steps at 1e-4
on Stable Diffusion, with 30 sampling steps for x_t): lambda_LA = 10, because at 1000 the anchoring
term held the adapters at zero here, and a 5-step sampler for x_t as for ESD.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call
from tqdm.auto import tqdm

from ... import threads
from ...models.denoiser import TransformerBlock
from ..registry import T2I_METHODS
from .common import ConceptSet, RetainSet, concept_prompts, diffusion_of, esd_target, finish, frozen, generators


def adapter_targets(denoiser: nn.Module) -> list[tuple[str, nn.Module]]:
    """The linear and convolution layers inside the transformer blocks (SPM's targets)."""
    blocks = [(n, m) for n, m in denoiser.named_modules()
              if isinstance(m, TransformerBlock) or type(m).__name__ == "Transformer2DModel"]
    out = []
    for bn, block in blocks:
        for n, m in block.named_modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                out.append((f"{bn}.{n}", m))
    return out


class OneDimAdapters(nn.Module):
    """Rank-1 adapters ``delta W = up @ down`` (``up`` starts at 0) for the target layers."""

    def __init__(self, targets: list[tuple[str, nn.Module]], rank: int = 1, generator: torch.Generator | None = None):
        super().__init__()
        self.names = [n for n, _ in targets]
        self.shapes = [tuple(m.weight.shape) for _, m in targets]
        self.down = nn.ParameterList()
        self.up = nn.ParameterList()
        for shape in self.shapes:
            fan_in = math.prod(shape[1:])
            bound = 1 / math.sqrt(fan_in)  # kaiming_uniform(a=sqrt(5)), LoRA's initialisation of ``down``
            self.down.append(nn.Parameter((torch.rand(rank, fan_in, generator=generator) * 2 - 1) * bound))
            self.up.append(nn.Parameter(torch.zeros(shape[0], rank)))

    def deltas(self) -> dict[str, torch.Tensor]:
        return {f"{n}.weight": (u @ d).view(s) for n, s, u, d in zip(self.names, self.shapes, self.up, self.down)}


@T2I_METHODS.register("SPM", description="one-dimensional adapters: negative-guidance erasing + latent anchoring",
                      source="Lyu et al. 2024 (SPM)", uses_data=False)
def spm(original, concept: ConceptSet, retain: RetainSet, *, steps: int = 60, lr: float = 1e-2, batch_size: int = 16,
        guidance_scale: float = 1.0, anchors: int = 16, la_strength: float = 10.0, ddim_steps: int = 5,
        start_guidance: float = 3.0, rank: int = 1, seed: int = 0, progress: bool = False):
    """SPM (see the module docstring): train 1-D adapters, return the model with them merged."""
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    base = frozen(original.copy())
    model = frozen(original.copy())
    adapters = OneDimAdapters(adapter_targets(model.denoiser), rank, gen).to(model.device)
    weights = {n: p for n, p in model.denoiser.named_parameters()}
    opt = torch.optim.AdamW(adapters.parameters(), lr=lr, weight_decay=0.0)

    def adapted(x, t, ctx):
        params = {**weights, **{n: weights[n] + d for n, d in adapters.deltas().items()}}
        return functional_call(model.denoiser, params, (x, t, ctx))

    with torch.no_grad():
        concept_ctx = base.encode(concept.prompts)
        null = base.null_context(batch_size)
    for _ in tqdm(range(steps), desc="SPM", disable=not progress, leave=False):
        threads.adapt()
        prompts = concept_prompts(concept, batch_size, rng)
        with torch.no_grad():
            ctx = base.encode(prompts)
            k = int(torch.randint(0, ddim_steps, (1,), generator=gen))
            noise = torch.randn((batch_size,) + model.image_shape, generator=gen).to(model.device)
            x_t, t_int = diffusion.sample(adapted, ctx, noise, steps=ddim_steps, guidance=start_guidance,
                                          null=null, stop_after=k)
        t = torch.full((batch_size,), int(t_int), device=model.device, dtype=torch.long)
        target = esd_target(base, x_t, t, prompts, guidance_scale)
        loss = F.mse_loss(adapted(x_t, t, ctx), target)
        if la_strength > 0 and anchors > 0:
            anchor_ctx = anchor_contexts(concept_ctx, anchors, gen)
            rows = torch.randint(0, batch_size, (anchors,), generator=gen).to(model.device)
            with torch.no_grad():
                keep = base(x_t[rows], t[rows], anchor_ctx)
            loss = loss + la_strength * F.mse_loss(adapted(x_t[rows], t[rows], anchor_ctx), keep)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    with torch.no_grad():
        for n, d in adapters.deltas().items():
            weights[n].add_(d)
    return finish(model)


def anchor_contexts(concept_ctx: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """SPM's latent-anchoring samples ``(n, L, D)`` around the concept's contexts ``(P, L, D)``.

    A Gaussian direction u (normalised over the whole context) is accepted with probability
    1 - cos(u, c) for a randomly chosen concept context c, then scaled to (0.8 + 0.4 U) ||c||.
    """
    out = []
    while len(out) < n:
        c = concept_ctx[int(torch.randint(0, len(concept_ctx), (1,), generator=gen))]
        u = torch.randn(c.shape, generator=gen).to(c.device)
        u = u / u.norm()
        cos = float(F.cosine_similarity(u.flatten(), c.flatten(), dim=0))
        if float(torch.rand(1, generator=gen)) < 1 - cos:
            out.append(u * c.norm() * (0.8 + 0.4 * float(torch.rand(1, generator=gen))))
    return torch.stack(out)
