"""The inpainting model of chapter 7: a convolutional encoder-decoder, its masks and its training.

RUB's image-to-image task (Sections 4.1 and 5.1) unlearns a masked autoencoder (MAE) trained to
fill in the missing part of an image. At course scale we use a **convolutional** encoder-decoder
instead of a transformer over patches: on a 2-core CPU it reaches a good reconstruction of 28x28
digits in a few epochs (a ViT-MAE needs far more steps to learn the same), and it keeps what Li et
al.'s method (ICLR 2024) needs, a clean split into an encoder E and a decoder D, with
f(x) = D(E(x)). Only E changes under their unlearning.

The mask (:class:`MaskSpec`)
    A centre square of ``hole`` x ``hole`` pixels and, outside it, each ``patch`` x ``patch``
    patch of a grid missing with probability ``patch_share``: the centre-plus-random-patches
    masks of Li et al.'s evaluation, at our image sizes. A mask is ``(N, 1, H, W)`` with 1 where
    the pixel is missing. Training draws fresh patches per batch; evaluation draws one fixed mask
    per image (seeded), so that every model is judged on the same masked inputs.
The input
    The masked image (missing pixels set to 0) and the mask itself as one more channel:
    ``(N, C + 1, H, W)``, so the network knows which zeros are missing pixels.
The output
    The whole image, ``(N, C, H, W)`` in [0, 1] (a sigmoid). Training minimises the binary
    cross-entropy over every pixel (the visible ones are copied through, the hole is inpainted); the course
    scores this output as it is, never a composite with the visible pixels pasted back (which
    would hand the judge half of the digit whatever the model learned).

Architecture (``width`` w, ``latent`` size k, square images of side S divisible by 4)::

    encoder: conv3x3(C+1 -> w) - conv4x4/2(w -> 2w) - conv4x4/2(2w -> 4w) - linear(4w (S/4)^2 -> k)
             (ReLU between layers; the encoding z is one vector of k numbers, no activation)
    decoder: linear(k -> 4w (S/4)^2) - convT4x4/2(4w -> 2w) - convT4x4/2(2w -> w) - conv3x3(w -> C),
             then a sigmoid

The encoding is **global**, one vector per image, like the class-aware token embeddings of an
MAE's transformer encoder: Li et al.'s unlearning must tell forget images from retain images by
their code alone, which a spatial code whose cells each see only a neighbourhood of the image does
poorly (the strokes of a 3 and of an 8 look alike up close).

No batch normalisation, so a model behaves the same in train and eval mode and the attack's
gradient for one image does not depend on its batch-mates.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..errors import CourseError
from ..threads import adapt as adapt_threads


@dataclass(frozen=True)
class MaskSpec:
    """Which pixels the inpainter must fill in: a centre square plus random patches.

    Attributes
    ----------
    hole:
        Side of the centre square in pixels (0: none).
    patch:
        Side of the random patches in pixels; the image is cut into a grid of such patches.
    patch_share:
        Probability that a patch outside the centre square is missing (0: the centre only).
    """

    hole: int = 12
    patch: int = 4
    patch_share: float = 0.25

    def check(self, image_size: int | None = None) -> "MaskSpec":
        """Raise :class:`CourseError` for a mask that is empty, covers everything or does not fit."""
        if not isinstance(self.hole, int) or self.hole < 0:
            raise CourseError(f"The mask's centre hole must be a whole number of pixels >= 0; got {self.hole!r}.")
        if not isinstance(self.patch, int) or self.patch < 1:
            raise CourseError(f"The mask's patch side must be a whole number >= 1; got {self.patch!r}.")
        if not 0.0 <= float(self.patch_share) < 1.0:
            raise CourseError(f"The mask's patch_share must lie in [0, 1); got {self.patch_share}.")
        if self.hole == 0 and self.patch_share == 0:
            raise CourseError("The mask hides nothing (hole=0 and patch_share=0): give it a centre hole or patches.")
        if image_size is not None:
            if self.hole >= image_size:
                raise CourseError(f"The centre hole ({self.hole} px) must be smaller than the image ({image_size} px).")
            if image_size % self.patch:
                raise CourseError(f"The patch side ({self.patch} px) must divide the image side ({image_size} px).")
        return self

    def sample(self, n: int, height: int, width: int, *, generator: torch.Generator | None = None) -> torch.Tensor:
        """``n`` masks ``(n, 1, height, width)`` (float, 1 = missing): the centre square plus random patches."""
        if height % self.patch or width % self.patch:
            raise CourseError(f"The patch side ({self.patch} px) must divide the image ({height}x{width}).")
        grid = torch.rand(n, 1, height // self.patch, width // self.patch, generator=generator) < self.patch_share
        mask = grid.float().repeat_interleave(self.patch, 2).repeat_interleave(self.patch, 3)
        if self.hole:
            top, left = (height - self.hole) // 2, (width - self.hole) // 2
            mask[:, :, top:top + self.hole, left:left + self.hole] = 1.0
        return mask

    def fixed(self, n: int, height: int, width: int, seed: int = 0) -> torch.Tensor:
        """The evaluation masks: ``n`` masks drawn with ``seed`` (the same ones for every model)."""
        return self.sample(n, height, width, generator=torch.Generator().manual_seed(int(seed)))

    def to_dict(self) -> dict:
        return asdict(self)


def default_mask_for(image_size: int) -> MaskSpec:
    """The course's mask for square images of ``image_size`` pixels: a centre square of about 3/7
    of the side (12 px of 28, 4 of 8, 14 of 32) and patches of a seventh (4, 2 or 4 px) at 25 %."""
    patch = 2 if image_size <= 16 else 4
    hole = max(2, int(round(image_size * 3 / 7 / 2)) * 2)
    return MaskSpec(hole=hole, patch=patch, patch_share=0.25).check(image_size)


def apply_mask(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inpainter's input ``(N, C + 1, H, W)``: the visible pixels of ``x`` (missing ones set to 0) and the mask."""
    return torch.cat([x * (1.0 - mask), mask], 1)


class Inpainter(nn.Module):
    """Convolutional inpainting encoder-decoder f = D o E (see the module docstring for the layers).

    ``forward(x_in)`` takes the masked input of :func:`apply_mask` ``(N, C + 1, H, W)`` and returns
    the reconstructed image ``(N, C, H, W)`` in [0, 1]. ``encoder`` and ``decoder`` are separate
    sub-modules; ``encode`` and ``decode`` call them. ``mask_spec`` records the masks it was
    trained for (unlearning methods draw their masks from it).
    """

    def __init__(self, channels: int = 1, width: int = 16, latent: int = 64, image_size: int = 28,
                 mask_spec: MaskSpec | None = None):
        super().__init__()
        if min(channels, width, latent) < 1 or image_size % 4 or image_size < 8:
            raise CourseError(f"channels, width and latent must be >= 1 and image_size a multiple of 4 (>= 8); "
                              f"got {channels}, {width}, {latent}, {image_size}.")
        w, side = width, image_size // 4
        self.channels, self.width, self.latent, self.image_size = channels, width, latent, image_size
        self.mask_spec = mask_spec or MaskSpec()
        self.encoder = nn.Sequential(
            nn.Conv2d(channels + 1, w, 3, padding=1), nn.ReLU(),
            nn.Conv2d(w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(2 * w, 4 * w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Flatten(), nn.Linear(4 * w * side * side, latent),
        )
        self.decoder = nn.Sequential(
            nn.Linear(latent, 4 * w * side * side), nn.ReLU(), nn.Unflatten(1, (4 * w, side, side)),
            nn.ConvTranspose2d(4 * w, 2 * w, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(2 * w, w, 4, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(w, channels, 3, padding=1),
        )

    def extra_repr(self) -> str:
        return f"mask_spec={self.mask_spec}"

    def encode(self, x_in: torch.Tensor) -> torch.Tensor:
        """E: masked input ``(N, C + 1, H, W)`` -> encoding ``(N, latent)``."""
        return self.encoder(x_in)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """D: encoding ``(N, latent)`` -> image ``(N, C, H, W)`` in [0, 1] (sigmoid of the logits)."""
        return torch.sigmoid(self.decoder(z))

    def logits(self, x_in: torch.Tensor) -> torch.Tensor:
        """The decoder's pre-sigmoid outputs ``(N, C, H, W)`` (what the training loss reads)."""
        return self.decoder(self.encode(x_in))

    def forward(self, x_in: torch.Tensor) -> torch.Tensor:
        return self.decode(self.encode(x_in))


def build_inpainter(input_shape, *, width: int = 16, latent: int = 64, mask_spec: MaskSpec | None = None) -> Inpainter:
    """An untrained :class:`Inpainter` for square images of ``input_shape`` ``(C, S, S)`` (S divisible by 4)."""
    if len(input_shape) != 3:
        raise CourseError(f"The inpainter needs images (C, H, W); got samples of shape {tuple(input_shape)}.")
    c, h, w = (int(v) for v in input_shape)
    if h != w or h % 4 or h < 8:
        raise CourseError(f"The inpainter needs square images with a side divisible by 4, at least 8 px; got {h}x{w}.")
    spec = (mask_spec or default_mask_for(h)).check(h)
    return Inpainter(c, width=width, latent=latent, image_size=h, mask_spec=spec)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


@torch.no_grad()
def inpaint(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model``'s reconstructions ``(N, C, H, W)`` of images ``x`` under masks ``mask`` (both ``(N, ., H, W)``), on the CPU."""
    model.eval()
    device = _device(model)
    out = [model(apply_mask(x[i:i + batch_size].to(device), mask[i:i + batch_size].to(device))).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out) if out else torch.zeros_like(x)


@torch.no_grad()
def encode(model: nn.Module, x: torch.Tensor, mask: torch.Tensor, batch_size: int = 512) -> torch.Tensor:
    """``model``'s encodings E(mask(x)) ``(N, latent)``, on the CPU."""
    model.eval()
    device = _device(model)
    out = [model.encode(apply_mask(x[i:i + batch_size].to(device), mask[i:i + batch_size].to(device))).cpu()
           for i in range(0, len(x), batch_size)]
    return torch.cat(out)


def hole_mse(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error inside the hole, per image ``(N,)``: sum over missing pixels / their number."""
    m = mask.expand_as(target)
    return ((output - target) ** 2 * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1)


def reconstruction_loss(model: Inpainter, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The inpainter's training loss on images ``x`` under ``mask``: binary cross-entropy between the
    reconstruction and ``x`` over every pixel, averaged (a scalar).

    Cross-entropy on the logits rather than the squared error of the sigmoid output: the squared
    error's gradient vanishes where the sigmoid saturates, and on MNIST, whose pixels are mostly 0,
    training with it can stall at an all-black output (cross-entropy is the usual loss for images
    in [0, 1]; Kingma & Welling, 2014).
    """
    return F.binary_cross_entropy_with_logits(model.logits(apply_mask(x, mask)), x)


def train_inpainter(model: Inpainter, x: torch.Tensor, *, epochs: int, lr: float = 2e-3, batch_size: int = 64,
                    seed: int = 0, progress: bool = True, desc: str = "train the inpainter") -> dict:
    """Train ``model`` in place to reconstruct images ``x`` ``(N, C, H, W)`` from masked copies; chapter 7.

    Adam with the learning rate decayed linearly to 0 (a course choice: plain SGD needs many more
    epochs for an autoencoder); every batch draws fresh masks from ``model.mask_spec``; the loss is
    :func:`reconstruction_loss` over all pixels. ``seed`` fixes the batch order and the masks. Returns
    ``{"train_loss", "train_seconds"}`` (loss of the last epoch).
    """
    if epochs < 1 or lr <= 0 or batch_size < 1:
        raise CourseError(f"epochs and batch_size must be >= 1 and lr > 0; got {epochs}, {batch_size}, {lr}.")
    if len(x) == 0:
        raise CourseError("The inpainter has no images to train on.")
    device = _device(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * -(-len(x) // batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    gen = torch.Generator().manual_seed(int(seed))
    h, w = x.shape[-2:]
    t0, last = time.perf_counter(), float("nan")
    bar = tqdm(total=steps, desc=desc, disable=not progress, leave=False)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=gen)
        total, count = 0.0, 0
        for s in range(0, len(x), batch_size):
            adapt_threads()
            xb = x[perm[s:s + batch_size]].to(device)
            mask = model.mask_spec.sample(len(xb), h, w, generator=gen).to(device)
            loss = reconstruction_loss(model, xb, mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + loss.item() * len(xb), count + len(xb)
            bar.update(1)
        last = total / count
        bar.set_postfix(loss=f"{last:.4f}", refresh=False)
    bar.close()
    model.zero_grad(set_to_none=True)   # a freshly trained model looks like a loaded one: no stale .grad
    model.eval()
    return {"train_loss": last, "train_seconds": time.perf_counter() - t0}
