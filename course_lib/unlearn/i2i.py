"""Image-to-image unlearning methods (RUB Section 4.3, chapter 7), behind one signature.

Every method here is registered in :data:`~course_lib.unlearn.registry.I2I_METHODS` and takes

    (original, forget, retain, **hyper_parameters) -> unlearned inpainter (a new module, eval mode)

``original``
    A trained :class:`~course_lib.models.inpainter.Inpainter` f = D o E; it is never modified. Its
    ``mask_spec`` says which masks the methods draw.
``forget`` / ``retain``
    :class:`~course_lib.data.Dataset` of the forget classes' and the retain classes' training
    images, ``x`` of shape (N, C, H, W) in [0, 1] (the labels are not used).
``hyper_parameters``
    Keyword arguments with defaults; every method accepts ``seed`` (batch order, masks, noise)
    and ``progress``.

``I2I``      Li et al. (ICLR 2024): only the encoder is trained; its encoding of masked retain
             images is kept at the original encoder's, its encoding of masked forget images is
             pushed to the original encoder's encoding of a masked Gaussian-noise image.
``SalUn``    SalUn's weight saliency (Fan et al., ICLR 2024) adapted to the inpainter (see
             :func:`salun_i2i` for the adaptation, which RUB does not publish).
``retrain``  a new inpainter trained from scratch on the retain images only: the control that RUB
             could not afford (Section 5.2), cached by configuration.

The masked noise image of the forget targets follows Li et al.'s public code: each pixel is drawn
from N(mu, sigma^2), mu and sigma the mean and standard deviation of the batch of forget images,
clipped to [0, 1], and masked with the *same* mask as the forget image it replaces.
"""
from __future__ import annotations

import time

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..cache import cached_model, clone_model
from ..config import seed_everything
from ..data import Dataset
from ..errors import CourseError
from ..models.inpainter import Inpainter, apply_mask, reconstruction_loss, train_inpainter
from ..threads import adapt as adapt_threads
from .registry import I2I_METHODS


def _check_inputs(original: nn.Module, forget: Dataset, retain: Dataset | None, name: str) -> None:
    if not isinstance(original, Inpainter):
        raise CourseError(f"{name} unlearns an inpainter (course_lib.models.inpainter.Inpainter); got "
                          f"{type(original).__name__}.")
    if len(forget) == 0:
        raise CourseError(f"{name}: the forget set is empty; choose at least one forget class with images.")
    if retain is not None and len(retain) == 0:
        raise CourseError(f"{name}: the retain set is empty; keep at least one class with images.")


def masked_noise_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gaussian-noise images shaped like ``x`` ``(N, C, H, W)``: N(mean(x), std(x)^2) per pixel, clipped to [0, 1]."""
    noise = torch.randn(x.shape, generator=generator).to(x.device)
    return (noise * x.std() + x.mean()).clamp(0.0, 1.0)


def _masked_batches(model: Inpainter, original: Inpainter, forget: Dataset, retain: Dataset, desc: str, *,
                    epochs: int, batch_size: int, generator: torch.Generator, progress: bool):
    """The training loop's batches ``(x_f, x_r, m_f, m_r)`` on ``model``'s device: the forget and
    retain images ``(B, C, H, W)`` and their masks ``(B, 1, H, W)`` from ``original.mask_spec``
    (1 = missing). The draws from ``generator`` come in a fixed order (batch order, the forget mask,
    the retain mask; the caller draws its noise after). Adapts the CPU threads, shows a progress bar."""
    device = next(model.parameters()).device
    h, w = forget.x.shape[-2:]
    with tqdm(total=_steps(forget, epochs, batch_size), desc=desc, disable=not progress, leave=False) as bar:
        for xf, xr in paired_batches(forget, retain, epochs=epochs, batch_size=batch_size, generator=generator):
            adapt_threads()
            xf, xr = xf.to(device), xr.to(device)
            mf = original.mask_spec.sample(len(xf), h, w, generator=generator).to(device)
            mr = original.mask_spec.sample(len(xr), h, w, generator=generator).to(device)
            yield xf, xr, mf, mr
            bar.update(1)


def paired_batches(forget: Dataset, retain: Dataset, *, epochs: int, batch_size: int, generator: torch.Generator):
    """Yield ``(forget_x, retain_x)`` batch pairs: every epoch is one pass over the forget set in a
    random order, each forget batch paired with as many random retain images (balanced, as in Li
    et al.'s training set of equal forget and retain counts)."""
    for _ in range(epochs):
        perm = torch.randperm(len(forget), generator=generator)
        for s in range(0, len(forget), batch_size):
            idx = perm[s:s + batch_size]
            ridx = torch.randint(0, len(retain), (len(idx),), generator=generator)
            yield forget.x[idx], retain.x[ridx]


def _steps(forget: Dataset, epochs: int, batch_size: int) -> int:
    return epochs * -(-len(forget) // batch_size)


def _check_schedule(epochs: int, lr: float, batch_size: int, name: str) -> None:
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise CourseError(f"{name}: epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}.")


# --------------------------------------------------------------------------- I2I (Li et al., 2024)

def i2i_objective(encoder, teacher, xf: torch.Tensor, xr: torch.Tensor, mf: torch.Tensor, mr: torch.Tensor,
                  noise: torch.Tensor, alpha: float) -> torch.Tensor:
    """Li et al.'s loss on one batch: ||E(T(x_r)) - E_0(T(x_r))||^2 + alpha ||E(T(x_f)) - E_0(T(n))||^2.

    ``encoder`` is E (trained), ``teacher`` the original inpainter (E_0 = ``teacher.encode``);
    ``xf``, ``xr`` forget and retain images ``(B, C, H, W)`` with masks ``mf``, ``mr``
    ``(B, 1, H, W)``; ``noise`` the noise images n (masked with ``mf``). Each squared norm is the
    mean squared error over the encoding (and the batch). Returns a scalar.
    """
    with torch.no_grad():
        target_r = teacher.encode(apply_mask(xr, mr))
        target_f = teacher.encode(apply_mask(noise, mf))
    return (F.mse_loss(encoder(apply_mask(xr, mr)), target_r)
            + alpha * F.mse_loss(encoder(apply_mask(xf, mf)), target_f))


@I2I_METHODS.register("I2I", description="Li et al.: encoder only; retain encodings kept, forget encodings -> noise's")
def i2i(original: Inpainter, forget: Dataset, retain: Dataset, *, alpha: float = 0.2, epochs: int = 10,
        lr: float = 3e-3, batch_size: int = 64, seed: int = 0, progress: bool = False) -> Inpainter:
    """Li et al.'s unlearning of an image-to-image model (ICLR 2024): train the encoder E only, on

        L(E) = E_{x_r}[ ||E(T(x_r)) - E_0(T(x_r))||^2 ] + alpha * E_{x_f, n}[ ||E(T(x_f)) - E_0(T(n))||^2 ]

    with T the masking, E_0 the original encoder, n the masked Gaussian-noise image of
    :func:`masked_noise_like` (same mask as x_f) and ||.||^2 the mean squared error over the
    encoding (:func:`i2i_objective`). The decoder D is frozen (bit-identical to the original's).
    This is the L2 objective that Li et al. derive as a tractable surrogate of their KL-divergence
    formulation; ``alpha`` weights the forget term (their public code's example run uses 0.2).

    Course choices (not fixed by the paper at this scale): Adam at ``lr`` for ``epochs`` passes
    over the forget set, each forget batch paired with as many random retain images.
    """
    _check_inputs(original, forget, retain, "I2I")
    _check_schedule(epochs, lr, batch_size, "I2I")
    if alpha < 0:
        raise CourseError(f"I2I: alpha weights the forget term and must be >= 0; got {alpha}.")
    seed_everything(seed)
    gen = torch.Generator().manual_seed(int(seed))
    model = clone_model(original)
    teacher = original.eval()
    for p in model.decoder.parameters():
        p.requires_grad_(False)
    opt = torch.optim.Adam(model.encoder.parameters(), lr=lr)
    model.train()
    for xf, xr, mf, mr in _masked_batches(model, original, forget, retain, "I2I", epochs=epochs,
                                          batch_size=batch_size, generator=gen, progress=progress):
        loss = i2i_objective(model.encode, teacher, xf, xr, mf, mr, masked_noise_like(xf, gen), alpha)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    for p in model.decoder.parameters():
        p.requires_grad_(True)
    return model.eval()


# --------------------------------------------------------------------------- SalUn for I2I

def inpainting_saliency_mask(model: Inpainter, forget: Dataset, mask_ratio: float = 0.5, *, seed: int = 0,
                             batch_size: int = 256) -> list[torch.Tensor]:
    """SalUn's weight-saliency mask (Fan et al., 2024, eq. 4) for the inpainter.

    Saliency = |d/d theta sum over the forget batches of the reconstruction loss| at ``model``
    (the forget images under masks drawn with ``seed``), over *every* parameter (encoder and
    decoder); one global threshold keeps exactly the top ``mask_ratio`` share (SalUn: 50 %).
    Returns boolean tensors shaped like ``model.parameters()`` (True = may move).
    """
    if not 0.0 < mask_ratio <= 1.0:
        raise CourseError(f"mask_ratio must lie in (0, 1]; got {mask_ratio}.")
    model.eval()
    params = list(model.parameters())
    device = next(model.parameters()).device
    gen = torch.Generator().manual_seed(int(seed))
    h, w = forget.x.shape[-2:]
    grads = [torch.zeros_like(p) for p in params]
    for s in range(0, len(forget), batch_size):
        xb = forget.x[s:s + batch_size].to(device)
        mb = model.mask_spec.sample(len(xb), h, w, generator=gen).to(device)
        loss = reconstruction_loss(model, xb, mb) * len(xb)
        for g, gi in zip(grads, torch.autograd.grad(loss, params)):
            g += gi
    flat = torch.cat([g.abs().reshape(-1) for g in grads])
    k = max(1, int(round(mask_ratio * flat.numel())))
    keep = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    keep[torch.topk(flat, k, sorted=False).indices] = True
    out, offset = [], 0
    for g in grads:
        out.append(keep[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
    return out


@I2I_METHODS.register("SalUn", description="saliency mask (top 50 % weights) + noise target on forget + retain loss")
def salun_i2i(original: Inpainter, forget: Dataset, retain: Dataset, *, mask_ratio: float = 0.5, beta: float = 1.0,
              epochs: int = 3, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
              progress: bool = False) -> Inpainter:
    """SalUn (Fan et al., ICLR 2024) adapted to the inpainter; RUB benchmarks SalUn on its MAE but
    does not publish the adaptation, so this one is the course's, and it follows SalUn's own recipe
    for generative models:

    1. **Saliency** (SalUn eq. 4): :func:`inpainting_saliency_mask` on the gradient of the model's
       own training loss on the forget images (SalUn uses the diffusion training loss on D_f);
       the top ``mask_ratio`` (50 %) of all weights, encoder *and* decoder, may move, the rest is
       a hard constraint (copied back after every step).
    2. **Objective**: SalUn's generative objective, a forget term that maps the forget data to
       another target plus ``beta`` times the training loss on D_r. Where SalUn's random-label
       term asks a diffusion model to generate another concept, the inpainter is asked to
       reconstruct, from a masked forget image, what the original model makes of the masked
       Gaussian-noise image of Li et al. (:func:`masked_noise_like`)::

           L(theta) = E_{x_f, n}[ ||f_theta(T(x_f)) - f_0(T(n))||^2 ] + beta * L_rec(theta; T(x_r), x_r)

       with ||.||^2 the mean squared error over the output image and L_rec the reconstruction
       loss the inpainter was trained with.

    Course choices: Adam at ``lr``, ``epochs`` passes over the forget set, balanced retain batches.
    """
    _check_inputs(original, forget, retain, "SalUn")
    _check_schedule(epochs, lr, batch_size, "SalUn")
    if beta < 0:
        raise CourseError(f"SalUn: beta weights the retain term and must be >= 0; got {beta}.")
    seed_everything(seed)
    model = clone_model(original)
    teacher = original.eval()
    saliency = inpainting_saliency_mask(model, forget, mask_ratio, seed=seed)
    frozen = [p.detach().clone() for p in model.parameters()]
    gen = torch.Generator().manual_seed(int(seed) + 1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for xf, xr, mf, mr in _masked_batches(model, original, forget, retain, "SalUn", epochs=epochs,
                                          batch_size=batch_size, generator=gen, progress=progress):
        with torch.no_grad():
            target_f = teacher(apply_mask(masked_noise_like(xf, gen), mf))
        loss = F.mse_loss(model(apply_mask(xf, mf)), target_f) + beta * reconstruction_loss(model, xr, mr)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            for p, keep, p0 in zip(model.parameters(), saliency, frozen):
                p.copy_(torch.where(keep, p, p0))
    return model.eval()


# --------------------------------------------------------------------------- retrain (the control)

@I2I_METHODS.register("retrain", description="a new inpainter trained from scratch on the retain images only (cached)")
def retrain_i2i(original: Inpainter, forget: Dataset, retain: Dataset, *, epochs: int = 12, lr: float = 3e-3,
                batch_size: int = 64, seed: int = 0, cache: bool = True, progress: bool = False) -> Inpainter:
    """Train an inpainter of ``original``'s architecture and masks from scratch on the retain images
    (Definition 1's f_r), with ``original``'s schedule (the RUB runner passes it). It never saw a
    forget image, so whatever it makes of one is what *any* inpainter generalises to. Cached under
    ``data/cache`` keyed by the architecture, the retain set's contents, the schedule and ``seed``.
    """
    _check_inputs(original, forget, retain, "retrain")
    _check_schedule(epochs, lr, batch_size, "retrain")
    device = next(original.parameters()).device
    config = {"stage": "i2i-retrain", "n_retain": len(retain),
              "epochs": epochs, "lr": lr, "batch_size": batch_size, "seed": int(seed),
              "mask": original.mask_spec.to_dict()}

    def build() -> Inpainter:
        seed_everything(seed)
        return Inpainter(original.channels, original.width, original.latent, original.image_size,
                         original.mask_spec).to(device)

    def fit(m: Inpainter) -> dict:
        t0 = time.perf_counter()
        info = train_inpainter(m, retain.x, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                               progress=progress, desc="retrain on the retain classes")
        return {**info, "seconds": time.perf_counter() - t0}

    model, _, _ = cached_model("i2i-retrain", config, build, fit, data=(retain,), use_cache=cache)
    return model.eval()
