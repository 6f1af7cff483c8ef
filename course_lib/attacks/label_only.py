"""Label inference through a label-only API (beyond the paper; chapter 4).

Section 9 of the inversion paper suggests, as a defense, that the server answer with the predicted
label only. This module attacks such a server. The attacker never sees a probability:

1. **Seeds.** Query ``seed_pool`` random inputs (Gaussian noise drawn at a random resolution
   between 2x2 and the image size, upsampled bilinearly, with a random mean and contrast, clipped to
   [0, 1]) and keep up to ``seeds_per_class`` inputs that the original model labels with each class.
2. **Boundary probes.** For each seed x_a (label a) and ``pairs_per_seed`` partners x_b with another
   label, binary-search the segment x_a -> x_b (``bisection_steps`` label queries) for the point
   where the label first changes. The search keeps two points a hair apart
   (``2**-bisection_steps`` of the segment): ``x_in`` still labelled a, ``x_out`` labelled b' != a.
   Both are boundary probes: ``x_in`` belongs to class a, ``x_out`` to class b'.
3. **Flip shares.** After unlearning, query every boundary probe once on the unlearned model. A
   probe of class k *flips* when the unlearned model no longer labels it k. Unlearning class c
   shrinks the region of c, so the probes of c sitting on its border flip, while the borders
   between two untouched classes move in no preferred direction. The score of class k is the share
   of its boundary probes that flip; the inferred class is the argmax (top-K for K classes), the
   label-only analogue of eq. (11).

Public API
----------
``LabelOnlyConfig.for_profile(profile, **overrides)``
``build_boundary_probes(api, *, num_classes, input_shape, config, seed)`` -> :class:`BoundaryProbes`
``probe_unlearned_labels(original_api, unlearned_api, probes, *, k=1)`` -> :class:`LabelOnlyInference`
``infer_label_only(original, unlearned, probes, *, k=1)``   same from two ``nn.Module`` s (wrapped
                                                            in ``BlackBoxAPI(output="labels")``)

Only :class:`~course_lib.attacks.blackbox.BlackBoxAPI` objects with ``output="labels"`` are used.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..budgets import Budget
from ..errors import CourseError
from .blackbox import BlackBoxAPI, PredictionAPI
from .unlearned_label import top_k_classes


@dataclass(frozen=True)
class LabelOnlyConfig(Budget):
    """Budget of the label-only attack.

    Attributes
    ----------
    seed_pool:
        Random inputs queried to find seeds of every class.
    seeds_per_class:
        Seeds kept per class.
    pairs_per_seed:
        Partners (seeds of other classes) per seed; each pair gives one boundary.
    bisection_steps:
        Label queries per boundary; the two boundary points end ``2**-steps`` of the segment apart.
    offset:
        Distance (L2, pixel units) by which each boundary probe is moved off the boundary into its
        own class; only boundaries that move further than this flip a probe. ``0``: on the boundary.
    """

    seed_pool: int = 2000
    seeds_per_class: int = 10
    pairs_per_seed: int = 9
    bisection_steps: int = 20
    offset: float = 0.1

    budget_name: ClassVar[str] = "label-only"
    PROFILES: ClassVar[dict] = {
        "quick": dict(seed_pool=2000, seeds_per_class=5, pairs_per_seed=9),
        "standard": dict(seed_pool=4000, seeds_per_class=10, pairs_per_seed=9),
        "full": dict(seed_pool=20000, seeds_per_class=20, pairs_per_seed=18),
    }

    def check(self) -> None:
        for name in ("seed_pool", "seeds_per_class", "pairs_per_seed", "bisection_steps"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if self.offset < 0:
            raise CourseError(f"offset must be >= 0 (0: on the boundary); got {self.offset}.")


@dataclass
class BoundaryProbes:
    """Boundary probes found with label queries only.

    Attributes
    ----------
    x:
        Probes ``(P, *input_shape)`` in [0, 1] (each boundary contributes an inside and an outside point).
    label:
        The original model's label of each probe, int64 ``(P,)``.
    pair:
        Index of the boundary each probe belongs to, ``(P,)``.
    seed_classes:
        Classes for which seeds were found (a class without seeds cannot be scored).
    queries:
        Label queries spent: ``{"seeds": ..., "bisection": ...}``.
    """

    x: torch.Tensor
    label: torch.Tensor
    pair: torch.Tensor
    num_classes: int
    seed_classes: list[int]
    queries: dict
    seconds: float
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.label.shape[0])

    def counts(self) -> list[int]:
        """Boundary probes per class."""
        return torch.bincount(self.label, minlength=self.num_classes).tolist()

    def summary(self) -> dict:
        return {"probes": len(self), "per_class": self.counts(), "seed_classes": list(self.seed_classes),
                "queries": dict(self.queries), "queries_total": int(sum(self.queries.values())),
                "seconds": round(self.seconds, 2)}


@dataclass
class LabelOnlyInference:
    """Outcome of the label-only attack: per-class flip shares and the inferred class(es)."""

    flip_share: torch.Tensor
    counts: list[int]
    inferred: list[int]
    queries: dict
    seconds: float

    @property
    def beta(self) -> torch.Tensor:
        """The score that plays beta's role (eq. 10): the flip share of each class."""
        return self.flip_share

    def to_dict(self) -> dict:
        return {"inferred": list(self.inferred), "flip_share": [float(v) for v in self.flip_share],
                "counts": list(self.counts), "queries": dict(self.queries), "seconds": round(self.seconds, 3)}


def _strokes(n: int, h: int, w: int, gen: torch.Generator, max_strokes: int = 5) -> torch.Tensor:
    """``n`` images ``(n, h, w)`` of 1 to ``max_strokes`` random soft line segments (values in [0, 1])."""
    k = max_strokes
    p0 = torch.rand((n, k, 2), generator=gen)
    p1 = (p0 + 1.2 * (torch.rand((n, k, 2), generator=gen) - 0.5)).clamp(0.1, 0.9)
    p0 = p0.clamp(0.1, 0.9)
    width = 0.025 + 0.03 * torch.rand((n, k, 1, 1), generator=gen)
    used = torch.arange(k).view(1, k) < torch.randint(1, k + 1, (n, 1), generator=gen)
    ys = torch.linspace(0, 1, h).view(h, 1).expand(h, w)
    xs = torch.linspace(0, 1, w).view(1, w).expand(h, w)
    grid = torch.stack([ys, xs], -1).view(1, 1, h, w, 2)
    a, b = p0.view(n, k, 1, 1, 2), p1.view(n, k, 1, 1, 2)
    ab = b - a
    t = (((grid - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp_min(1e-8)).clamp(0, 1)
    dist2 = ((a + t.unsqueeze(-1) * ab - grid) ** 2).sum(-1)
    ink = torch.exp(-dist2 / (2 * width ** 2)) * used.view(n, k, 1, 1)
    return ink.max(dim=1).values


def random_inputs(n: int, input_shape, gen: torch.Generator) -> torch.Tensor:
    """Data-free random inputs in [0, 1]: half smooth noise, half random strokes.

    Smooth noise: Gaussian noise drawn at a random resolution between 2x2 and the image size,
    upsampled bilinearly, with a random mean and contrast. Strokes: 1-5 soft random line segments
    of random intensity on a random background (for images only). Rows ``(n, *input_shape)``.
    """
    shape = tuple(input_shape)
    if len(shape) != 3:
        mean = torch.rand((n, 1), generator=gen)
        std = 0.5 * torch.rand((n, 1), generator=gen)
        return (mean + std * torch.randn((n, *shape), generator=gen)).clamp(0, 1)
    c, h, w = shape
    out = torch.empty((n, c, h, w))
    sides = torch.randint(2, max(h, w) + 1, (n,), generator=gen)
    for side in sides.unique().tolist():
        rows = torch.nonzero(sides == side).flatten()
        z = torch.randn((len(rows), c, min(side, h), min(side, w)), generator=gen)
        out[rows] = F.interpolate(z, size=(h, w), mode="bilinear", align_corners=False)
    mean = torch.rand((n, 1, 1, 1), generator=gen)
    std = 0.6 * torch.rand((n, 1, 1, 1), generator=gen)
    noise = (mean + std * out).clamp(0, 1)
    n_strokes = n // 2
    if n_strokes:
        ink = _strokes(n_strokes, h, w, gen).unsqueeze(1)
        colour = torch.rand((n_strokes, c, 1, 1), generator=gen)
        background = 0.3 * torch.rand((n_strokes, c, 1, 1), generator=gen)
        noise[:n_strokes] = (background + ink * (colour - background).abs().clamp_min(0.5)).clamp(0, 1)
    return noise


def _bisect(api: BlackBoxAPI, xa: torch.Tensor, xb: torch.Tensor, la: torch.Tensor, steps: int):
    """Batched binary search on segments ``xa -> xb`` for the first change of label away from ``la``."""
    n = xa.shape[0]
    lo = torch.zeros(n, dtype=torch.float64)
    hi = torch.ones(n, dtype=torch.float64)
    view = (-1,) + (1,) * (xa.ndim - 1)
    diff = (xb - xa).double()
    label_hi = torch.full((n,), -1, dtype=torch.long)
    for _ in range(steps):
        mid = (lo + hi) / 2
        lab = api.query((xa.double() + mid.view(view) * diff).float())
        same = lab == la
        lo = torch.where(same, mid, lo)
        hi = torch.where(same, hi, mid)
        label_hi = torch.where(same, label_hi, lab)
    return lo, hi


def _place(api: BlackBoxAPI, xa: torch.Tensor, xb: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor,
           offset: float):
    """Probes ``offset`` (L2, pixel units) inside and outside the boundary found between ``lo`` and ``hi``."""
    view = (-1,) + (1,) * (xa.ndim - 1)
    diff = (xb - xa).double()
    length = diff.flatten(1).norm(dim=1).clamp_min(1e-12)
    t_in = (lo - offset / length).clamp(0.0, 1.0)
    t_out = (hi + offset / length).clamp(0.0, 1.0)
    x_in = (xa.double() + t_in.view(view) * diff).float().clamp(0, 1)
    x_out = (xa.double() + t_out.view(view) * diff).float().clamp(0, 1)
    x = torch.cat([x_in, x_out])
    out = api.query(x)
    return x, (out.argmax(1) if out.ndim == 2 else out)


def build_boundary_probes(api: BlackBoxAPI, *, num_classes: int, input_shape, config: LabelOnlyConfig | None = None,
                          seed: int = 0, progress: bool = True) -> BoundaryProbes:
    """Find seeds of every class and boundary probes between them, with label queries only.

    Parameters
    ----------
    api:
        The original model behind ``BlackBoxAPI(output="labels")`` (a probability API works too;
        only its argmax is used).
    num_classes, input_shape:
        Public facts about the task.
    config:
        :class:`LabelOnlyConfig` (default: the profile's).

    Used by chapter 4 and chapter 6.
    """
    if not isinstance(api, PredictionAPI):
        raise CourseError("build_boundary_probes needs a BlackBoxAPI: the attacker only has query access.")
    cfg = (config or LabelOnlyConfig.for_profile()).validated()
    input_shape = tuple(int(s) for s in input_shape)
    gen = torch.Generator().manual_seed(int(seed))
    start = time.perf_counter()

    def labels_of(x):
        out = api.query(x)
        return out.argmax(1) if out.ndim == 2 else out

    q0 = api.queries
    pool = random_inputs(cfg.seed_pool, input_shape, gen)
    pool_labels = labels_of(pool)
    seeds, seed_labels = [], []
    for c in range(num_classes):
        idx = torch.nonzero(pool_labels == c).flatten()[:cfg.seeds_per_class]
        seeds.append(pool[idx])
        seed_labels.append(torch.full((len(idx),), c, dtype=torch.long))
    seeds_x, seeds_y = torch.cat(seeds), torch.cat(seed_labels)
    seed_classes = sorted(set(seeds_y.tolist()))
    q_seeds = api.queries - q0
    if len(seed_classes) < 2:
        raise CourseError("The random inputs all received the same label, so no class boundary can be "
                          "found; raise seed_pool.")

    # pairs: every seed with `pairs_per_seed` partners of other labels, cycling through the classes
    a_idx, b_idx = [], []
    for i in range(len(seeds_y)):
        others = torch.nonzero(seeds_y != seeds_y[i]).flatten()
        perm = others[torch.randperm(len(others), generator=gen)]
        # prefer one partner per other class first, so every class pair is represented
        order = sorted(range(len(perm)), key=lambda j: (sum(int(seeds_y[perm[q]] == seeds_y[perm[j]])
                                                              for q in range(j)), j))
        for j in order[:cfg.pairs_per_seed]:
            a_idx.append(i)
            b_idx.append(int(perm[j]))
    a_idx_t, b_idx_t = torch.tensor(a_idx), torch.tensor(b_idx)
    q1 = api.queries
    bar = tqdm(total=1, desc="boundary probes (label-only)", disable=not progress, leave=False)
    xa, xb = seeds_x[a_idx_t], seeds_x[b_idx_t]
    lo, hi = _bisect(api, xa, xb, seeds_y[a_idx_t], cfg.bisection_steps)
    q_bis = api.queries - q1
    x, label = _place(api, xa, xb, lo, hi, cfg.offset)
    bar.update(1)
    bar.close()
    q_place = api.queries - q1 - q_bis
    pair = torch.arange(len(a_idx)).repeat(2)
    return BoundaryProbes(x=x, label=label, pair=pair, num_classes=num_classes, seed_classes=seed_classes,
                          queries={"seeds": q_seeds, "bisection": q_bis, "placement": q_place},
                          seconds=time.perf_counter() - start, config=cfg.to_dict())


def probe_unlearned_labels(original_api: BlackBoxAPI, unlearned_api: BlackBoxAPI, probes: BoundaryProbes, *,
                           k: int = 1) -> LabelOnlyInference:
    """Query the boundary probes on both label APIs; the class whose probes flip most was unlearned.

    ``original_api=None`` uses the labels recorded when the probes were built (no queries); an API
    is queried again (the same labels for an unchanged original, useful for a defended one). A
    class without boundary probes scores 0. Attack code: sees only the two APIs.

    Used by chapter 4 and chapter 6.
    """
    for api in (original_api, unlearned_api):
        if api is not None and not isinstance(api, PredictionAPI):
            raise CourseError("probe_unlearned_labels needs BlackBoxAPI objects (query access only).")
    start = time.perf_counter()
    q0 = original_api.queries if original_api is not None else 0
    q1 = unlearned_api.queries

    def labels_of(api, x):
        out = api.query(x)
        return out.argmax(1) if out.ndim == 2 else out

    # the labels recorded while building the probes, or a fresh answer of the original API
    before = probes.label if original_api is None else labels_of(original_api, probes.x)
    after = labels_of(unlearned_api, probes.x)
    flipped = (after != before).double()
    counts = torch.bincount(before, minlength=probes.num_classes)
    flips = torch.bincount(before, weights=flipped, minlength=probes.num_classes)
    share = torch.where(counts > 0, flips / counts.clamp_min(1), torch.zeros_like(flips))
    return LabelOnlyInference(flip_share=share, counts=counts.tolist(), inferred=top_k_classes(share, k),
                              queries={"original": (original_api.queries - q0) if original_api is not None else 0,
                                       "unlearned": unlearned_api.queries - q1},
                              seconds=time.perf_counter() - start)


def infer_label_only(original, unlearned, probes: BoundaryProbes, *, k: int = 1) -> LabelOnlyInference:
    """Developer-side convenience: wrap two models in label-only APIs and run the label-only attack.

    Used by chapter 4 and chapter 6.
    """
    def as_api(obj, name):
        return obj if isinstance(obj, PredictionAPI) else BlackBoxAPI(obj, "labels", name=name)

    return probe_unlearned_labels(as_api(original, "original"), as_api(unlearned, "unlearned"), probes, k=k)
