"""The text-to-image model of chapter 8: prompts, tokenizer, text encoder and denoiser in one module.

A :class:`T2IModel` is what Stable Diffusion is, at the scale of ten digit classes: prompts such
as ``"a handwritten seven"`` (:data:`TEMPLATES` x :data:`DIGIT_WORDS`) go through the
:class:`~course_lib.models.text_encoder.WordTokenizer` and the
:class:`~course_lib.models.text_encoder.TextEncoder` into a context ``(B, L, D)``, which the
denoiser reads through cross-attention to predict the noise of an image.

The unlearning methods of :data:`course_lib.unlearn.T2I_METHODS` take the original ``T2IModel``
and return a new one (a copy; the original is never modified): some change the denoiser (ESD,
FMN, SalUn, EraseDiff, Scissorhands, SPM), AdvUnlearn changes the text encoder, the retrain
control trains a fresh one. :func:`build_t2i` makes a fresh model from an architecture dict, so
the cache and the retrain control rebuild exactly the same layers.
"""
from __future__ import annotations

import copy
from typing import Sequence

import torch
from torch import nn

from ..errors import CourseError
from .denoiser import DiffusersDenoiser, TinyCondUNet
from .text_encoder import TextEncoder, WordTokenizer

#: The name of each digit class in prompts (class index = position).
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
#: Prompt templates; ``{}`` is the class word. Each training image gets one at random.
TEMPLATES = ("a handwritten {}", "the digit {}", "a photo of the number {}", "a {} written by hand",
             "a drawing of a {}")
#: Words of the vocabulary besides the class words.
FILLER_WORDS = ("a", "handwritten", "the", "digit", "photo", "of", "number", "written", "by", "hand", "drawing")
#: Token sequence length: <start>, up to 6 prompt words, room for up to 8 soft tokens of the attack, <end>.
MAX_LENGTH = 16


def prompts_for(word: str, templates: Sequence[str] = TEMPLATES) -> list[str]:
    """Every template filled with ``word`` (the prompts of one concept)."""
    return [t.format(word) for t in templates]


class T2IModel(nn.Module):
    """Tokenizer + text encoder + denoiser: a prompt-conditioned noise predictor (chapter 8).

    Attributes
    ----------
    tokenizer, text_encoder, denoiser:
        The three parts; ``denoiser(x_t, t, context) -> eps``.
    arch:
        The architecture (JSON-serialisable), enough for :func:`build_t2i` to rebuild it.
    """

    def __init__(self, tokenizer: WordTokenizer, text_encoder: TextEncoder, denoiser: nn.Module, arch: dict):
        super().__init__()
        self.tokenizer = tokenizer
        self.text_encoder = text_encoder
        self.denoiser = denoiser
        self.arch = dict(arch)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return (int(self.arch["channels"]), int(self.arch["size"]), int(self.arch["size"]))

    def token_ids(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """Token ids ``(B, L)`` on the model's device; unknown words raise a :class:`CourseError`."""
        return self.tokenizer.encode(prompts).to(self.device)

    def encode(self, prompts: Sequence[str] | str) -> torch.Tensor:
        """The context ``(B, L, D)`` of ``prompts`` (``""`` is the null prompt)."""
        return self.text_encoder(self.token_ids(prompts))

    def null_context(self, batch: int = 1) -> torch.Tensor:
        """The null prompt's context ``(batch, L, D)`` (classifier-free guidance's unconditional branch)."""
        return self.encode([""]).expand(batch, -1, -1)

    def forward(self, x: torch.Tensor, t: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Predicted noise ``(B, C, H, W)`` of ``x`` at integer timesteps ``t`` ``(B,)`` given ``context``."""
        return self.denoiser(x, t, context)

    def copy(self) -> "T2IModel":
        """A deep copy (weights and all) on the same device."""
        return copy.deepcopy(self)


def default_arch(size: int, *, denoiser: str = "tiny", width: int = 32, text_dim: int = 32,
                 text_layers: int = 2, heads: int = 4, channels: int = 1, timesteps: int = 1000,
                 beta_schedule: str = "squaredcos_cap_v2") -> dict:
    """The architecture dict of :func:`build_t2i` (``denoiser``: ``"tiny"`` or ``"diffusers"``).

    ``timesteps`` and ``beta_schedule`` are the noise schedule the model is trained and sampled with
    (:class:`course_lib.diffusion.Diffusion`).
    """
    if denoiser not in ("tiny", "diffusers"):
        raise CourseError(f"Unknown denoiser {denoiser!r}; choose 'tiny' (CPU) or 'diffusers' (GPU).")
    return {"denoiser": denoiser, "size": int(size), "channels": int(channels), "width": int(width),
            "text_dim": int(text_dim), "text_layers": int(text_layers), "heads": int(heads),
            "words": list(FILLER_WORDS + DIGIT_WORDS), "max_length": MAX_LENGTH, "timesteps": int(timesteps),
            "beta_schedule": beta_schedule}


def build_t2i(arch: dict, device: torch.device | str | None = None) -> T2IModel:
    """A freshly initialised :class:`T2IModel` of architecture ``arch`` (see :func:`default_arch`)."""
    tokenizer = WordTokenizer(arch["words"], arch["max_length"])
    text_encoder = TextEncoder(len(tokenizer), arch["max_length"], arch["text_dim"], arch["text_layers"], arch["heads"])
    if arch["denoiser"] == "tiny":
        denoiser = TinyCondUNet(arch["channels"], arch["width"], arch["text_dim"], arch["heads"])
    else:
        denoiser = DiffusersDenoiser(arch["size"], arch["channels"], arch["width"], arch["text_dim"], arch["heads"])
    model = T2IModel(tokenizer, text_encoder, denoiser, arch)
    return model.to(device) if device is not None else model
