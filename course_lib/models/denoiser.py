"""Noise predictors for the text-to-image diffusion model of chapter 8, all with one interface.

``denoiser(x_t (B, C, H, W), t (B,) int64 in [0, T), context (B, L, D)) -> predicted noise (B, C, H, W)``

:class:`TinyCondUNet`
    The CPU profiles' denoiser: a two-level U-Net with residual blocks (GroupNorm, SiLU, 3x3
    convolutions, the time embedding added), and transformer blocks like Stable Diffusion's
    (self-attention ``attn1``, cross-attention ``attn2`` whose queries are the pixels and whose
    keys and values are the prompt's context, a feed-forward layer), at the low and the high
    resolution. A few ten thousand parameters, for 8x8 or 14x14 grey images.
:class:`DiffusersDenoiser`
    ``full`` on a GPU: diffusers' ``UNet2DConditionModel`` (the U-Net of Stable Diffusion) at 28x28
    or 32x32, wrapped to the same interface.

Both name their cross-attention modules ``attn2`` (with ``to_q``, ``to_k``, ``to_v``, ``to_out``)
and their time embedding ``time_embedding``, as diffusers does, so the unlearning methods select
"the cross-attention" (ESD-x) or "everything but it" (ESD-u) by the same parameter names for both.
:func:`record_cross_attention` captures the cross-attention probabilities of every ``attn2``
(Forget-Me-Not's attention re-steering needs them).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding ``(B, dim)`` of integer timesteps ``t`` ``(B,)`` (DDPM's, as in diffusers)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
    args = t.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=1)


def _groups(channels: int) -> int:
    return next(g for g in (8, 4, 2, 1) if channels % g == 0)


class Attention(nn.Module):
    """Multi-head attention with diffusers' layer names; ``record`` (a list) receives the probabilities.

    ``forward(x (B, N, C), context (B, L, D) | None) -> (B, N, C)``; without ``context`` it is
    self-attention. Recorded probabilities have shape ``(B, heads, N, L)``.
    """

    def __init__(self, dim: int, context_dim: int | None = None, heads: int = 4):
        super().__init__()
        context_dim = context_dim or dim
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(context_dim, dim, bias=False)
        self.to_v = nn.Linear(context_dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.record: list | None = None

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        context = x if context is None else context
        b, n, c = x.shape
        h = self.heads
        q = self.to_q(x).view(b, n, h, c // h).transpose(1, 2)
        k = self.to_k(context).view(b, context.shape[1], h, c // h).transpose(1, 2)
        v = self.to_v(context).view(b, context.shape[1], h, c // h).transpose(1, 2)
        # explicit softmax attention: for a few dozen tokens it is faster on a CPU than the fused kernel
        probs = torch.softmax(q @ k.transpose(-1, -2) * (1.0 / math.sqrt(c // h)), dim=-1)
        if self.record is not None:
            self.record.append(probs)
        out = probs @ v
        return self.to_out[0](out.transpose(1, 2).reshape(b, n, c))


class TransformerBlock(nn.Module):
    """Stable Diffusion's spatial transformer: norm, proj_in, self-attn, cross-attn, feed-forward, proj_out."""

    def __init__(self, channels: int, context_dim: int, heads: int = 4):
        super().__init__()
        self.norm = nn.GroupNorm(_groups(channels), channels)
        self.proj_in = nn.Linear(channels, channels)
        self.norm1, self.norm2, self.norm3 = (nn.LayerNorm(channels) for _ in range(3))
        self.attn1 = Attention(channels, None, heads)
        self.attn2 = Attention(channels, context_dim, heads)
        self.ff = nn.Sequential(nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels))
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        b, c, hgt, wid = x.shape
        h = self.proj_in(self.norm(x).flatten(2).transpose(1, 2))
        h = h + self.attn1(self.norm1(h))
        h = h + self.attn2(self.norm2(h), context)
        h = h + self.ff(self.norm3(h))
        return x + self.proj_out(h).transpose(1, 2).reshape(b, c, hgt, wid)


class ResBlock(nn.Module):
    """GroupNorm-SiLU-conv, plus the projected time embedding, GroupNorm-SiLU-conv, with a skip."""

    def __init__(self, c_in: int, c_out: int, t_dim: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(c_in), c_in)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1)
        self.time_emb_proj = nn.Linear(t_dim, c_out)
        self.norm2 = nn.GroupNorm(_groups(c_out), c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1)
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = h + self.time_emb_proj(F.silu(temb))[:, :, None, None]
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class TimeEmbedding(nn.Module):
    def __init__(self, dim: int, out_dim: int):
        super().__init__()
        self.dim = dim
        self.linear_1 = nn.Linear(dim, out_dim)
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(timestep_embedding(t, self.dim))))


class TinyCondUNet(nn.Module):
    """A small text-conditioned U-Net for CPU profiles (chapter 8).

    Layout at image side S (8 or 14) with width w: conv_in (1 -> w) at S x S, a residual block,
    a stride-2 convolution to S/2 x S/2 with 2w channels, residual block, transformer block
    (self- and cross-attention), residual block, nearest up-sampling back to S x S, concatenation
    with the skip, residual block, transformer block, and conv_out (w -> 1).
    """

    def __init__(self, channels: int = 1, width: int = 32, context_dim: int = 32, heads: int = 4):
        super().__init__()
        w, t_dim = width, 2 * width
        self.time_embedding = TimeEmbedding(w, t_dim)
        self.conv_in = nn.Conv2d(channels, w, 3, padding=1)
        self.down_res = ResBlock(w, w, t_dim)
        self.downsample = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1)
        self.mid_res1 = ResBlock(2 * w, 2 * w, t_dim)
        self.mid_attn = TransformerBlock(2 * w, context_dim, heads)
        self.mid_res2 = ResBlock(2 * w, 2 * w, t_dim)
        self.upsample = nn.Conv2d(2 * w, w, 3, padding=1)
        self.up_res = ResBlock(2 * w, w, t_dim)
        self.up_attn = TransformerBlock(w, context_dim, heads)
        self.norm_out = nn.GroupNorm(_groups(w), w)
        self.conv_out = nn.Conv2d(w, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        temb = self.time_embedding(t)
        h0 = self.down_res(self.conv_in(x), temb)
        h = self.downsample(h0)
        h = self.mid_res1(h, temb)
        h = self.mid_attn(h, context)
        h = self.mid_res2(h, temb)
        h = F.interpolate(h, size=h0.shape[-2:], mode="nearest")
        h = self.up_res(torch.cat([self.upsample(h), h0], dim=1), temb)
        h = self.up_attn(h, context)
        return self.conv_out(F.silu(self.norm_out(h)))


class DiffusersDenoiser(nn.Module):
    """diffusers' ``UNet2DConditionModel`` behind the course's interface (``full`` on a GPU, chapter 8).

    Three resolution levels (e.g. 28 -> 14 -> 7), cross-attention in the first two down blocks and
    the last two up blocks, ``cross_attention_dim`` = the text encoder's width.
    """

    def __init__(self, sample_size: int, channels: int = 1, width: int = 64, context_dim: int = 32, heads: int = 4):
        super().__init__()
        from diffusers import UNet2DConditionModel

        self.unet = UNet2DConditionModel(
            sample_size=sample_size, in_channels=channels, out_channels=channels, layers_per_block=1,
            block_out_channels=(width, 2 * width, 2 * width),
            down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=context_dim, attention_head_dim=max(1, width // heads), norm_num_groups=8)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.unet(x, t, encoder_hidden_states=context).sample


class _RecordingProcessor:
    """A diffusers attention processor that computes attention explicitly and records the probabilities."""

    def __init__(self, store: list):
        self.store = store

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, temb=None, **kwargs):
        context = hidden_states if encoder_hidden_states is None else encoder_hidden_states
        b, n, _ = hidden_states.shape
        q = attn.head_to_batch_dim(attn.to_q(hidden_states))
        k = attn.head_to_batch_dim(attn.to_k(context))
        v = attn.head_to_batch_dim(attn.to_v(context))
        probs = attn.get_attention_scores(q, k, None)
        self.store.append(probs.view(b, -1, n, context.shape[1]))
        out = attn.batch_to_head_dim(torch.bmm(probs, v))
        return attn.to_out[1](attn.to_out[0](out))


@contextlib.contextmanager
def record_cross_attention(denoiser: nn.Module):
    """Within the block, every cross-attention (``attn2``) appends its probabilities ``(B, heads, N, L)``
    to the yielded list (Forget-Me-Not, chapter 8). Works for both denoisers."""
    store: list = []
    modules = [(n, m) for n, m in denoiser.named_modules() if n.endswith("attn2")]
    saved = []
    for _, m in modules:
        if isinstance(m, Attention):
            saved.append(("record", m, m.record))
            m.record = store
        else:  # diffusers' Attention
            saved.append(("processor", m, m.processor))
            m.set_processor(_RecordingProcessor(store))
    try:
        yield store
    finally:
        for kind, m, old in saved:
            if kind == "record":
                m.record = old
            else:
                m.set_processor(old)
