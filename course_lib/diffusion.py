"""Denoising diffusion for chapter 8: diffusers' noise schedules, DDPM training, DDIM sampling with guidance.

The model is trained as in DDPM (Ho et al., 2020, Algorithm 1): for an image x_0, a timestep
t ~ U{0, ..., T-1} and noise eps ~ N(0, I), the noised image is
x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps (``DDPMScheduler.add_noise``) and the loss is
||eps - eps_theta(x_t, t, c)||^2. The prompt c is replaced by the null prompt with probability
``p_uncond`` (classifier-free guidance, Ho & Salimans, 2022), so one network learns both the
conditional and the unconditional prediction.

Sampling is DDIM (Song et al., 2021; ``DDIMScheduler``, eta = 0, "trailing" timestep spacing so
the first step starts from pure noise) on the guided prediction
eps = eps(x_t, t, null) + w * (eps(x_t, t, c) - eps(x_t, t, null)). Images live in [-1, 1]
inside the diffusion and in [0, 1] outside it (:func:`to_model_space`, :func:`to_image_space`).
:meth:`Diffusion.sample` with ``stop_after`` runs only the first steps (ESD, SPM and AdvUnlearn
train on such partially denoised x_t).
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from . import threads
from .errors import CourseError
from .models.t2i import DIGIT_WORDS, TEMPLATES, T2IModel


def to_model_space(images: torch.Tensor) -> torch.Tensor:
    """[0, 1] pixels -> [-1, 1], the diffusion's range."""
    return images * 2 - 1


def to_image_space(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] -> [0, 1] pixels (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


class Diffusion:
    """The noise schedule (diffusers' ``DDPMScheduler``) and DDIM sampler of one model (chapter 8).

    Parameters
    ----------
    num_train_timesteps:
        T, the number of diffusion steps of training (1000, as in DDPM and Stable Diffusion).
    beta_schedule:
        diffusers' name of the beta schedule; the cosine schedule ``"squaredcos_cap_v2"`` (Nichol &
        Dhariwal, 2021) suits small images better than the linear one.
    """

    def __init__(self, num_train_timesteps: int = 1000, beta_schedule: str = "squaredcos_cap_v2"):
        from diffusers import DDIMScheduler, DDPMScheduler

        self.num_train_timesteps = int(num_train_timesteps)
        self.beta_schedule = beta_schedule
        self.ddpm = DDPMScheduler(num_train_timesteps=self.num_train_timesteps, beta_schedule=beta_schedule,
                                  clip_sample=True)
        self._ddim_cls = DDIMScheduler
        self._ddim: dict[int, object] = {}
        abar = self.ddpm.alphas_cumprod.to(torch.float32)
        self._sqrt_abar, self._sqrt_1m_abar = abar.sqrt(), (1 - abar).sqrt()

    # ------------------------------------------------------------------ forward process

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for integer timesteps ``t`` ``(B,)``.

        The same as ``DDPMScheduler.add_noise`` with the coefficients kept on the right device once.
        """
        if self._sqrt_abar.device != x0.device:
            self._sqrt_abar, self._sqrt_1m_abar = self._sqrt_abar.to(x0.device), self._sqrt_1m_abar.to(x0.device)
        shape = (-1,) + (1,) * (x0.ndim - 1)
        t = t.to(x0.device)
        return self._sqrt_abar[t].view(shape) * x0 + self._sqrt_1m_abar[t].view(shape) * noise

    def ddim(self, steps: int):
        """diffusers' ``DDIMScheduler`` with ``steps`` inference steps (one per step count, reused)."""
        if steps not in self._ddim:
            sched = self._ddim_cls(num_train_timesteps=self.num_train_timesteps, beta_schedule=self.beta_schedule,
                                   clip_sample=True, set_alpha_to_one=True, timestep_spacing="trailing")
            sched.set_timesteps(steps)
            self._ddim[steps] = sched
        return self._ddim[steps]

    def timesteps(self, steps: int) -> list[int]:
        """The DDIM timesteps of a ``steps``-step sampler, from noisy to clean."""
        return [int(t) for t in self.ddim(steps).timesteps]

    # ------------------------------------------------------------------ reverse process

    def guided_eps(self, model: T2IModel, x: torch.Tensor, t: int, context: torch.Tensor,
                   null: torch.Tensor, guidance: float) -> torch.Tensor:
        """eps(x, null) + w (eps(x, c) - eps(x, null)) in one batched forward; ``w = 1`` skips the null branch."""
        tt = torch.full((x.shape[0],), int(t), device=x.device, dtype=torch.long)
        if guidance == 1.0:
            return model(x, tt, context)
        eps = model(torch.cat([x, x]), torch.cat([tt, tt]), torch.cat([null, context]))
        eps_null, eps_cond = eps.chunk(2)
        return eps_null + guidance * (eps_cond - eps_null)

    def sample(self, model: T2IModel, context: torch.Tensor, noise: torch.Tensor, *, steps: int,
               guidance: float, null: torch.Tensor | None = None, stop_after: int | None = None):
        """DDIM with classifier-free guidance from ``noise`` ``(B, C, H, W)`` under ``context`` ``(B, L, D)``.

        Returns the images ``(B, C, H, W)`` in [0, 1]. With ``stop_after = k`` (0 <= k < steps) it
        stops after k steps and returns ``(x_t in [-1, 1], t)``: the partially denoised sample and
        the timestep it is at. Gradients flow only if the caller enables them.
        """
        sched = self.ddim(steps)
        if null is None:
            null = model.null_context(noise.shape[0])
        elif null.shape[0] != noise.shape[0]:
            null = null.expand(noise.shape[0], -1, -1)
        x = noise
        ts = self.timesteps(steps)
        n = len(ts) if stop_after is None else int(stop_after)
        if not 0 <= n <= len(ts):
            raise CourseError(f"stop_after must lie in [0, {len(ts)}]; got {stop_after}.")
        for t in ts[:n]:
            eps = self.guided_eps(model, x, t, context, null, guidance)
            x = sched.step(eps, t, x, eta=0.0).prev_sample
        if stop_after is not None:
            return x, (ts[n] if n < len(ts) else 0)
        return to_image_space(x)

    @torch.no_grad()
    def generate(self, model: T2IModel, prompts: Sequence[str], seeds: Sequence[int], *, steps: int,
                 guidance: float, batch_size: int = 256) -> torch.Tensor:
        """Images ``(N, C, H, W)`` in [0, 1] for ``prompts[i]`` from the noise of ``seeds[i]`` (recorded seeds)."""
        if len(prompts) != len(seeds):
            raise CourseError(f"Give one seed per prompt; got {len(prompts)} prompts and {len(seeds)} seeds.")
        noise = seeded_noise(seeds, model.image_shape, model.device)
        out = []
        for i in range(0, len(prompts), batch_size):
            ctx = model.encode(list(prompts[i:i + batch_size]))
            out.append(self.sample(model, ctx, noise[i:i + batch_size], steps=steps, guidance=guidance))
        return torch.cat(out) if out else torch.zeros(0, *model.image_shape)

    def to_dict(self) -> dict:
        return {"num_train_timesteps": self.num_train_timesteps, "beta_schedule": self.beta_schedule}


def seeded_noise(seeds: Sequence[int], shape: Sequence[int], device=None) -> torch.Tensor:
    """One standard-normal image per seed ``(N, *shape)``: the same seed always gives the same noise."""
    out = torch.empty(len(seeds), *shape)
    for i, s in enumerate(seeds):
        out[i] = torch.randn(*shape, generator=torch.Generator().manual_seed(int(s)))
    return out.to(device) if device is not None else out


# --------------------------------------------------------------------------- training

@dataclass(frozen=True)
class PromptSet:
    """Prompts of every class: ``prompts[k]`` are class k's templates filled with its word."""

    words: tuple[str, ...] = DIGIT_WORDS
    templates: tuple[str, ...] = TEMPLATES

    def of(self, label: int) -> list[str]:
        return [t.format(self.words[int(label)]) for t in self.templates]

    def all(self) -> list[str]:
        """Every class's prompts, then the null prompt ``""`` (index ``len - 1``)."""
        return [p for k in range(len(self.words)) for p in self.of(k)] + [""]


def diffusion_loss(diffusion: Diffusion, model: T2IModel, x0: torch.Tensor, context: torch.Tensor,
                   generator: torch.Generator | None = None, reduction: str = "mean") -> torch.Tensor:
    """The DDPM loss ||eps - eps_theta(x_t, t, c)||^2 at random t and eps (x0 in [-1, 1])."""
    b = x0.shape[0]
    t = torch.randint(0, diffusion.num_train_timesteps, (b,), generator=generator).to(x0.device)
    noise = torch.randn(x0.shape, generator=generator).to(x0.device)
    pred = model(diffusion.add_noise(x0, noise, t), t, context)
    return F.mse_loss(pred, noise, reduction=reduction)


def train_t2i(model: T2IModel, diffusion: Diffusion, images: torch.Tensor, labels: torch.Tensor, *,
              steps: int, batch_size: int, lr: float, p_uncond: float = 0.1, prompts: PromptSet = PromptSet(),
              seed: int = 0, progress: bool = True, desc: str = "train the diffusion model") -> dict:
    """Train ``model`` (text encoder and denoiser together) in place with the DDPM loss; chapter 8.

    ``images`` ``(N, C, H, W)`` in [0, 1], ``labels`` ``(N,)``. Each sample gets a random template
    of its class, or the null prompt with probability ``p_uncond``. AdamW, learning rate ``lr``
    with a linear warm-up over the first 5 % of the steps and a cosine decay to 0, gradients
    clipped at norm 1. The text encoder is trained with the denoiser (Stable Diffusion's CLIP is
    pretrained and frozen; no pretrained encoder exists at this scale). Returns the loss curve.
    """
    if steps < 1 or batch_size < 1 or lr <= 0:
        raise CourseError(f"Training needs steps >= 1, batch_size >= 1 and lr > 0; got {steps}, {batch_size}, {lr}.")
    if len(images) == 0:
        raise CourseError("There are no training images.")
    device = model.device
    gen = torch.Generator().manual_seed(int(seed))
    all_prompts = prompts.all()
    ids = model.token_ids(all_prompts)
    n_templates, null_index = len(prompts.templates), len(all_prompts) - 1
    x_all = to_model_space(images).to(device)
    labels = labels.to(torch.long)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0, fused=device.type in ("cpu", "cuda"))
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warm) * 0.5 * (1 + torch.cos(torch.tensor(torch.pi * s / steps)).item()))
    model.train()
    losses, t0 = [], time.perf_counter()
    for _ in tqdm(range(steps), desc=desc, disable=not progress, leave=False):
        threads.adapt()
        idx = torch.randint(0, len(x_all), (batch_size,), generator=gen)
        choice = labels[idx] * n_templates + torch.randint(0, n_templates, (batch_size,), generator=gen)
        choice[torch.rand(batch_size, generator=gen) < p_uncond] = null_index
        context = model.text_encoder(ids)[choice.to(device)]
        loss = diffusion_loss(diffusion, model, x_all[idx.to(device)], context, gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(float(loss.detach()))
    model.eval()
    tail = losses[-max(1, steps // 10):]
    return {"final_loss": sum(tail) / len(tail), "train_seconds": time.perf_counter() - t0, "steps": steps}
