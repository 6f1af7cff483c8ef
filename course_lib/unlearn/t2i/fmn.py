"""FMN: Forget-Me-Not's attention re-steering (Zhang et al., 2024, "Forget-Me-Not: Learning to
Forget in Text-to-Image Diffusion Models", Section 3.2); chapter 8.

Given images of the concept and prompts that name it, FMN pushes the cross-attention *away from
the concept's tokens*: for a noised image x_t of the concept and its prompt c, every cross-attention
layer l of the denoiser gives attention probabilities A_l (pixels x tokens); the loss is the norm of
the probabilities that fall on the concept's token positions,

    L_FMN = || [ A_l[:, :, :, concept positions] ]_{l, heads} ||_2,

minimised over the denoiser's weights. The attention has to go somewhere (a softmax sums to one),
so it moves to the other tokens and the concept word no longer reaches the image.

The official implementation has two switches. ``use_pooler`` adds every ``<end>`` token to the
concept positions: in a causal text encoder like CLIP (and the course's) the tokens after the concept
word carry it too. ``only_optimize_ca`` restricts the update to the cross-attention layers. Their
released configuration (AdamW with weight decay 0.01, lr 2e-6, 35 steps, batch 1, real images of the
concept) turns the pooler on and trains the whole U-Net. The course's defaults turn the pooler off and
train the cross-attention only (``use_pooler=False``, ``group="xattn"``): a course prompt names
nothing but its digit, so every prompt's ``<end>`` tokens carry its class, and suppressing them (or
re-steering through the whole denoiser) removed the conditioning of every digit, not only the
erased one. Learning rate and steps were tuned on the chapter's digit model.
"""
from __future__ import annotations

import torch
from tqdm.auto import tqdm

from ... import threads
from ...models.denoiser import record_cross_attention
from ..registry import T2I_METHODS
from .common import (ConceptSet, RetainSet, concept_prompts, diffusion_of, finish, generators, image_batch, noised,
                     trainable_copy)


def concept_positions(model, prompts: list[str], word: str, use_pooler: bool = True) -> torch.Tensor:
    """Boolean mask ``(B, L)`` of the concept word's token positions (and of every ``<end>``, ``use_pooler``)."""
    ids = model.token_ids(prompts)
    mask = ids == model.tokenizer.index[word]
    if use_pooler:
        mask |= ids == model.tokenizer.end_id
    return mask


def attention_on_concept(model, x_t: torch.Tensor, t: torch.Tensor, prompts: list[str], word: str,
                         use_pooler: bool = True) -> torch.Tensor:
    """FMN's loss: the L2 norm of all cross-attention probabilities on the concept's positions."""
    mask = concept_positions(model, prompts, word, use_pooler)
    with record_cross_attention(model.denoiser) as maps:
        model(x_t, t, model.encode(prompts))
    parts = [a.permute(0, 3, 1, 2)[mask] for a in maps]  # (positions, heads, pixels) per layer
    return torch.cat([p.reshape(-1) for p in parts]).norm()


@T2I_METHODS.register("FMN", description="Forget-Me-Not: re-steer cross-attention away from the concept's tokens",
                      source="Zhang et al. 2024 (Forget-Me-Not), Sec. 3.2", uses_data=True)
def fmn(original, concept: ConceptSet, retain: RetainSet, *, steps: int = 40, lr: float = 1e-3, batch_size: int = 16,
        weight_decay: float = 0.01, use_pooler: bool = False, group: str = "xattn", seed: int = 0,
        progress: bool = False):
    """Forget-Me-Not's attention re-steering (see the module docstring); ``group`` ``"full"`` or ``"xattn"``."""
    diffusion = diffusion_of(original)
    gen, rng = generators(seed)
    model, params = trainable_copy(original, group)
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    images = concept.images.to(model.device)
    for _ in tqdm(range(steps), desc="FMN", disable=not progress, leave=False):
        threads.adapt()
        x0, _ = image_batch(images, batch_size, gen)
        x_t, t, _ = noised(diffusion, x0, gen)
        loss = attention_on_concept(model, x_t, t, concept_prompts(concept, x0.shape[0], rng), concept.word, use_pooler)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
    return finish(model)
