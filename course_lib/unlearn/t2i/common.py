"""What every text-to-image unlearning method shares: the data it gets and the pieces of its losses.

The registry :data:`course_lib.unlearn.T2I_METHODS` holds functions with one signature::

    method(original: T2IModel, concept: ConceptSet, retain: RetainSet, *, seed=0, progress=False,
           **hyper_parameters) -> T2IModel

``original``
    The trained prompt-conditioned diffusion model (text encoder + denoiser,
    :class:`~course_lib.models.t2i.T2IModel`); it is **never modified**: a method works on a copy
    and returns a new model in eval mode, with the same architecture.
``concept``
    The concept to erase (:class:`ConceptSet`): its word, its class label, its prompts and its
    images (the real training images of that class: what the data-based methods forget).
``retain``
    What the model keeps (:class:`RetainSet`): the other classes' images and prompts.

Methods work in the model's own noise schedule (:func:`diffusion_of`) and draw their randomness
from ``seed``. Parameter groups follow diffusers' names (:func:`parameter_group`).
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F

from ...diffusion import Diffusion, to_model_space
from ...errors import CourseError
from ...models.t2i import T2IModel

_DIFFUSIONS: dict[tuple, Diffusion] = {}


def diffusion_of(model: T2IModel) -> Diffusion:
    """The :class:`~course_lib.diffusion.Diffusion` (noise schedule) ``model`` was trained with."""
    key = (int(model.arch.get("timesteps", 1000)), model.arch.get("beta_schedule", "squaredcos_cap_v2"))
    if key not in _DIFFUSIONS:
        _DIFFUSIONS[key] = Diffusion(*key)
    return _DIFFUSIONS[key]


@dataclass
class ConceptSet:
    """The concept to erase: ``word`` (e.g. ``"seven"``), class ``label``, its ``prompts`` and ``images``
    ``(N, C, H, W)`` in [0, 1]."""

    word: str
    label: int
    prompts: list[str]
    images: torch.Tensor

    def __post_init__(self):
        if not self.prompts:
            raise CourseError(f"The concept {self.word!r} needs at least one prompt.")


@dataclass
class RetainSet:
    """The retained classes: ``images`` ``(N, C, H, W)`` in [0, 1], their ``labels`` ``(N,)`` and
    ``prompts_by_label[k]`` (class k's prompts)."""

    images: torch.Tensor
    labels: torch.Tensor
    prompts_by_label: dict = field(default_factory=dict)

    def prompts(self) -> list[str]:
        """Every retained class's prompts."""
        return [p for k in sorted(self.prompts_by_label) for p in self.prompts_by_label[k]]

    def prompts_of(self, labels: torch.Tensor, rng: random.Random) -> list[str]:
        """A random prompt of each label's class."""
        return [rng.choice(self.prompts_by_label[int(k)]) for k in labels]


# --------------------------------------------------------------------------- parameters

def parameter_group(model: T2IModel, group: str) -> list[tuple[str, torch.nn.Parameter]]:
    """Named parameters of a group, by diffusers' module names (ESD's ``train_method``s).

    ``"xattn"``: the denoiser's cross-attention (every ``attn2``); ``"noxattn"``: the denoiser
    without the cross-attention, the time embedding and the output layer (ESD-u); ``"full"``:
    the whole denoiser; ``"text_encoder"``: the whole text encoder (AdvUnlearn).
    """
    if group == "text_encoder":
        return [(f"text_encoder.{n}", p) for n, p in model.text_encoder.named_parameters()]
    named = list(model.denoiser.named_parameters())
    if group == "full":
        out = named
    elif group == "xattn":
        out = [(n, p) for n, p in named if "attn2" in n]
    elif group == "noxattn":
        out = [(n, p) for n, p in named if not ("attn2" in n or "time_emb" in n or "conv_out" in n)]
    else:
        raise CourseError(f"Unknown parameter group {group!r}; choose xattn, noxattn, full or text_encoder.")
    return [(f"denoiser.{n}", p) for n, p in out]


def top_share_masks(scores: Sequence[torch.Tensor], share: float) -> list[torch.Tensor]:
    """Boolean masks (one per tensor of ``scores``) of the ``share`` of all entries with the largest
    scores, under one global threshold (SalUn's eq. 6 on |gradient|, Scissorhands' trimming on
    connection sensitivity). Ties at the threshold are kept."""
    if not 0 < share <= 1:
        raise CourseError(f"The share of weights to select must lie in (0, 1]; got {share}.")
    flat = torch.cat([s.detach().flatten() for s in scores])
    k = max(1, int(round(share * flat.numel())))
    threshold = torch.topk(flat, k).values.min()
    return [s >= threshold for s in scores]


def trainable_copy(original: T2IModel, group: str) -> tuple[T2IModel, list[torch.nn.Parameter]]:
    """A copy of ``original`` whose only trainable parameters are ``group``'s (returned too)."""
    model = original.copy()
    for p in model.parameters():
        p.requires_grad_(False)
    params = [p for _, p in parameter_group(model, group)]
    for p in params:
        p.requires_grad_(True)
    model.eval()  # no dropout or batch statistics in these models; eval keeps it deterministic
    return model, params


def frozen(model: T2IModel) -> T2IModel:
    """``model`` in eval mode with gradients off (the frozen original of a method's loss)."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


def finish(model: T2IModel) -> T2IModel:
    """Return a method's result: gradients off, eval mode."""
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval()


# --------------------------------------------------------------------------- batches and losses

def image_batch(images: torch.Tensor, batch_size: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """A random batch ``(x0 in [-1, 1], indices)`` of ``images`` (with replacement across calls)."""
    idx = torch.randint(0, len(images), (min(batch_size, len(images)),), generator=gen)
    return to_model_space(images[idx]), idx


def noised(diffusion: Diffusion, x0: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(x_t, t, eps)`` at uniformly random timesteps."""
    t = torch.randint(0, diffusion.num_train_timesteps, (x0.shape[0],), generator=gen).to(x0.device)
    eps = torch.randn(x0.shape, generator=gen).to(x0.device)
    return diffusion.add_noise(x0, eps, t), t, eps


def retain_loss(diffusion: Diffusion, model: T2IModel, retain: RetainSet, batch_size: int, gen: torch.Generator,
                rng: random.Random) -> torch.Tensor:
    """The DDPM loss on a random retain batch with its own prompts (SalUn's, EraseDiff's, Scissorhands' L_r)."""
    x0, idx = image_batch(retain.images, batch_size, gen)
    x0 = x0.to(model.device)
    x_t, t, eps = noised(diffusion, x0, gen)
    return F.mse_loss(model(x_t, t, model.encode(retain.prompts_of(retain.labels[idx], rng))), eps)


def concept_prompts(concept: ConceptSet, n: int, rng: random.Random) -> list[str]:
    """``n`` prompts of the concept drawn at random."""
    return [rng.choice(concept.prompts) for _ in range(n)]


def partial_samples(diffusion: Diffusion, model: T2IModel, context: torch.Tensor, *, ddim_steps: int,
                    guidance: float, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """ESD's x_t: DDIM from fresh noise under ``context`` for a random number t_enc in [0, ddim_steps)
    of the ``ddim_steps`` steps, by ``model`` itself; returns ``(x_t, t (B,))`` (no gradient)."""
    k = int(torch.randint(0, ddim_steps, (1,), generator=gen))
    noise = torch.randn((context.shape[0],) + model.image_shape, generator=gen).to(model.device)
    with torch.no_grad():
        x_t, t = diffusion.sample(model, context, noise, steps=ddim_steps, guidance=guidance, stop_after=k)
    return x_t, torch.full((context.shape[0],), int(t), device=model.device, dtype=torch.long)


def esd_target(original: T2IModel, x_t: torch.Tensor, t: torch.Tensor, prompts: Sequence[str],
               eta: float) -> torch.Tensor:
    """ESD's negatively guided target eps(x_t, null) - eta (eps(x_t, c) - eps(x_t, null)) of the frozen original."""
    with torch.no_grad():
        e_c = original(x_t, t, original.encode(list(prompts)))
        e_0 = original(x_t, t, original.null_context(x_t.shape[0]))
    return e_0 - eta * (e_c - e_0)


def generators(seed: int) -> tuple[torch.Generator, random.Random]:
    """A torch generator and a Python RNG seeded with ``seed`` (every method's randomness)."""
    torch.manual_seed(int(seed))
    return torch.Generator().manual_seed(int(seed)), random.Random(int(seed))
