"""The prompt side of the text-to-image model of chapter 8: a word-level tokenizer and a small text encoder.

Stable Diffusion encodes a prompt with CLIP's text transformer; the course does the same thing at
the scale of ten digit classes:

:class:`WordTokenizer`
    Splits a prompt such as ``"a handwritten seven"`` into words of a fixed vocabulary and writes
    ``[<start>, w_1, ..., w_n, <end>, <end>, ...]`` padded to ``max_length`` with ``<end>``, as
    CLIP's tokenizer does for Stable Diffusion v1. The empty prompt ``""`` is the null prompt of
    classifier-free guidance: ``[<start>, <end>, ...]``.
:class:`TextEncoder`
    Token embeddings plus learned position embeddings, a few pre-norm transformer layers with a
    *causal* mask (a token sees only the tokens before it, as in CLIP), and a final layer norm.
    ``forward(ids)`` or ``forward(ids, inputs_embeds=...)`` returns the context ``(B, L, D)`` that
    the denoiser's cross-attention reads. Passing ``inputs_embeds`` is how the soft-prompt attack
    (:mod:`course_lib.attacks.prompt_attack`) feeds continuous token embeddings through the encoder.

Because the mask is causal, the tokens *before* the concept word do not know it, while the concept
word, ``<end>`` and the padding after it do (CLIP's pooled ``<end>`` token carries the whole
prompt). Forget-Me-Not's attention re-steering relies on this (it suppresses the concept word and
the ``<end>`` tokens).
"""
from __future__ import annotations

import re
from typing import Sequence

import torch
from torch import nn

from ..errors import CourseError

START, END = "<start>", "<end>"


class WordTokenizer:
    """Word-level tokenizer with a fixed vocabulary (chapter 8).

    Parameters
    ----------
    words:
        The vocabulary, without the special tokens (they come first: ``<start>`` = 0, ``<end>`` = 1).
    max_length:
        Length L of every token sequence, ``<start>`` and the ``<end>`` padding included.
    """

    def __init__(self, words: Sequence[str], max_length: int):
        words = [w.lower() for w in words]
        if len(set(words)) != len(words):
            raise CourseError("The vocabulary lists a word twice.")
        self.vocab = [START, END] + list(words)
        self.index = {w: i for i, w in enumerate(self.vocab)}
        self.max_length = int(max_length)
        self.start_id, self.end_id = 0, 1

    def __len__(self) -> int:
        return len(self.vocab)

    def words(self, prompt: str) -> list[str]:
        """The words of ``prompt`` (lower case, punctuation removed)."""
        if not isinstance(prompt, str):
            raise CourseError(f"A prompt is a string; got {prompt!r}.")
        return re.findall(r"[a-z]+", prompt.lower())

    def check(self, prompt: str, extra_tokens: int = 0) -> list[str]:
        """The words of ``prompt``; a :class:`CourseError` for an unknown word or a prompt too long.

        ``extra_tokens`` reserves room for tokens inserted later (the attack's soft tokens).
        """
        words = self.words(prompt)
        unknown = [w for w in words if w not in self.index]
        if unknown:
            raise CourseError(f"The prompt {prompt!r} uses word(s) the model's vocabulary lacks: "
                              f"{', '.join(unknown)}. Known words: {', '.join(self.vocab[2:])}.")
        room = self.max_length - 2 - extra_tokens
        if len(words) > room:
            raise CourseError(f"The prompt {prompt!r} has {len(words)} words; at most {room} fit in "
                              f"{self.max_length} tokens{' beside the attack tokens' if extra_tokens else ''}.")
        return words

    def encode(self, prompts: Sequence[str] | str, extra_tokens: int = 0) -> torch.Tensor:
        """Token ids ``(B, L)`` (int64) of ``prompts``."""
        if isinstance(prompts, str):
            prompts = [prompts]
        out = torch.full((len(prompts), self.max_length), self.end_id, dtype=torch.long)
        out[:, 0] = self.start_id
        for i, prompt in enumerate(prompts):
            ids = [self.index[w] for w in self.check(prompt, extra_tokens)]
            out[i, 1:1 + len(ids)] = torch.tensor(ids, dtype=torch.long)
        return out

    def decode(self, ids: torch.Tensor) -> str:
        """The words of one id sequence ``(L,)``, special tokens dropped."""
        return " ".join(self.vocab[int(i)] for i in ids if int(i) > 1)

    def to_dict(self) -> dict:
        return {"words": self.vocab[2:], "max_length": self.max_length}


class TextEncoder(nn.Module):
    """A small causal transformer text encoder (CLIP's layout at a tiny width; chapter 8).

    ``forward(ids (B, L) int64, inputs_embeds (B, L, D) | None) -> context (B, L, D)``.
    ``token_embedding`` holds the vocabulary's embeddings ``(V, D)``; the soft-prompt attack writes
    its own rows into ``inputs_embeds`` in the same space.
    """

    def __init__(self, vocab_size: int, max_length: int, dim: int = 32, layers: int = 2, heads: int = 4):
        super().__init__()
        self.dim, self.max_length = int(dim), int(max_length)
        self.token_embedding = nn.Embedding(vocab_size, dim)
        self.position_embedding = nn.Parameter(torch.zeros(1, max_length, dim))
        layer = nn.TransformerEncoderLayer(dim, heads, dim_feedforward=2 * dim, dropout=0.0, activation="gelu",
                                           batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.final_layer_norm = nn.LayerNorm(dim)
        nn.init.normal_(self.token_embedding.weight, std=0.5)
        nn.init.normal_(self.position_embedding, std=0.1)
        mask = torch.triu(torch.full((max_length, max_length), float("-inf")), diagonal=1)
        self.register_buffer("causal_mask", mask, persistent=False)

    def embed(self, ids: torch.Tensor) -> torch.Tensor:
        """Token embeddings ``(B, L, D)`` of ids ``(B, L)`` (before the position embeddings)."""
        return self.token_embedding(ids)

    def forward(self, ids: torch.Tensor | None = None, inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embed(ids) if inputs_embeds is None else inputs_embeds
        length = x.shape[1]
        x = x + self.position_embedding[:, :length]
        x = self.layers(x, mask=self.causal_mask[:length, :length], is_causal=True)
        return self.final_layer_norm(x)
