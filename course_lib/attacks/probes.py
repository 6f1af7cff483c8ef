"""Probing samples for label inference (Section 3.2.2 of the inversion paper, eqs. 7-8), black-box only.

A user who can only *query* the deployed model M builds probes that capture its behaviour: start
from Gaussian noise in [0, 1] and push each probe x' towards a target class y_t until the original
model's confidence reaches ``target_confidence`` (paper: 1 - 1e-3), minimising

   ``g(x', y_t) = max_{i != y_t} log p_i(x') - log p_{y_t}(x')``   subject to x' in [0, 1]^N.

The paper writes eq. (8) with logits Z but calls them "predicted probabilities"; a user sees only
probabilities, so we use their logarithm, as the ZOO paper does for its black-box loss (Chen et
al. 2017, eq. 5). A difference of log-probabilities equals the difference of logits, so this *is*
eq. (8) evaluated from what the API returns. ``m = probes_per_class`` probes per class; the
prediction vector of the original model on each probe is recorded.

The gradient of g is estimated from queries alone (:mod:`course_lib.attacks.zeroth_order`):
``method="zoo"`` is the paper's coordinate ZOO-ADAM, ``method="nes"`` the query-efficient NES
(an addition of the course). Both stop a probe as soon as its confidence reaches the target or its
query budget ``max_queries`` is spent; :class:`ProbeSet` reports the queries each probe used.

Public API (chapter 4; chapter 6's defenses call it too)
--------------------------------------------------------
``ProbeConfig.for_profile(profile, **overrides)``       budgets per profile
``build_probes(api, *, num_classes, input_shape, probes_per_class, method, config, seed)`` -> :class:`ProbeSet`

:mod:`course_lib.attacks.unlearned_label` then probes the unlearned model (eqs. 9-11).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from ..threads import adapt as adapt_threads
from ..budgets import Budget
from ..errors import CourseError, check_choice, check_range
from .blackbox import BlackBoxAPI, PredictionAPI
from .zeroth_order import NesEstimator, ZooEstimator, margin_loss, probe_loss  # noqa: F401 (margin_loss: chapter 4)

PROBE_METHODS = ("zoo", "nes")
PROBE_LOSSES = ("margin", "ce")


# --------------------------------------------------------------------------- configuration

@dataclass(frozen=True)
class ProbeConfig(Budget):
    """Budget and hyper-parameters of probe construction (one table per profile).

    Attributes
    ----------
    target_confidence:
        Stop once the original model gives the target class at least this probability
        (paper, Section 5.2: 1 - 1e-3).
    max_queries:
        Query budget of one probe; a probe that has not reached the target by then is kept and
        flagged ``reached=False``.
    init_mean, init_std:
        The Gaussian noise a probe starts from, clipped to [0, 1] (pixel units).
    zoo_coordinates:
        Coordinates per ZOO iteration (the ZOO paper's batch of 128); 2 queries each.
    zoo_h:
        Finite-difference step of ZOO (ZOO paper: 1e-4), pixel units.
    zoo_lr:
        Adam learning rate of ZOO, pixel units per step (ZOO paper: 0.01 on [-0.5, 0.5] images).
    zoo_block, zoo_importance_every:
        Region size of importance sampling and how often (iterations) the probabilities are refreshed.
    nes_samples:
        Antithetic direction pairs per NES iteration (2 queries each).
    nes_sigma:
        Smoothing radius of NES (pixel units).
    nes_resolution:
        Side of the reduced grid in which NES draws its directions (the image side when larger).
    nes_lr:
        Adam learning rate of NES on the reduced grid (pixel units per step).
    loss:
        ``"margin"``: eq. (8) on log-probabilities (the paper's and ZOO's loss, default);
        ``"ce"``: ``-log p_t``, which pushes down every other class at once.
    calibration_band:
        Probes should sit *at* the confidence target, not far beyond it: eq. (9) compares
        probabilities, and a probe at ``p_t = 1 - 1e-14`` (plain noise that the model already calls
        an "8", say) rounds to 1 on both models and shows no drop at all. After construction, a
        probe whose error mass ``1 - p_t`` is below ``calibration_band * (1 - target_confidence)``
        is moved back by bisection along the segment towards a probe of another class, until
        ``1 - p_t`` lies in ``[band * (1 - target), 1 - target]`` (at most
        ``calibration_steps`` queries per probe). ``0`` switches calibration off. Our addition:
        the paper only says probes are pushed "until" the target is reached (Section 5.2).
    calibration_steps:
        Bisection queries per over-confident probe.
    """

    target_confidence: float = 1 - 1e-3
    max_queries: int = 20_000
    init_mean: float = 0.5
    init_std: float = 0.25
    zoo_coordinates: int = 128
    zoo_h: float = 1e-4
    zoo_lr: float = 0.05
    zoo_block: int = 4
    zoo_importance_every: int = 5
    nes_samples: int = 10
    nes_sigma: float = 0.05
    nes_resolution: int = 14
    nes_lr: float = 0.1
    loss: str = "margin"
    calibration_band: float = 0.5
    calibration_steps: int = 30

    budget_name: ClassVar[str] = "probes"
    PROFILES: ClassVar[dict] = {
        "quick": dict(max_queries=10_000),
        "standard": dict(max_queries=20_000),
        "full": dict(max_queries=100_000),
    }

    @classmethod
    def paper(cls, profile=None, **overrides) -> "ProbeConfig":
        """The paper's probe construction (Section 5.2): ZOO's settings, no calibration (an addition)."""
        return cls.for_profile(profile, **{"calibration_band": 0.0, **overrides})

    def check(self) -> None:
        check_range(self.target_confidence, 0.0, 1.0, "target_confidence", low_open=True, high_open=True)
        if self.max_queries < 1:
            raise CourseError(f"max_queries must be a positive number of queries; got {self.max_queries}.")
        for name in ("zoo_coordinates", "zoo_block", "zoo_importance_every", "nes_samples", "nes_resolution"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        check_choice(self.loss, PROBE_LOSSES, "probe loss")
        check_range(self.calibration_band, 0.0, 1.0, "calibration_band", high_open=True)
        if self.calibration_steps < 1:
            raise CourseError(f"calibration_steps must be at least 1; got {self.calibration_steps}.")
        for name in ("zoo_h", "zoo_lr", "nes_sigma", "nes_lr"):
            if getattr(self, name) <= 0:
                raise CourseError(f"{name} must be positive; got {getattr(self, name)}.")


# --------------------------------------------------------------------------- results

@dataclass
class ProbeSet:
    """The probing dataset D_p of Section 3.2.2.

    Attributes
    ----------
    x:
        Probes, float32 in [0, 1], ``(P, *input_shape)`` with ``P = num_classes * probes_per_class``,
        grouped by target class (class 0's probes first).
    target:
        Target class of each probe, int64 ``(P,)``.
    probs:
        The original model's prediction vector on each probe (Y_hat of eq. 9), float64 ``(P, K)``.
    reached:
        Whether the probe reached ``target_confidence``, bool ``(P,)``.
    queries:
        Queries each probe's construction spent, int64 ``(P,)``.
    iterations:
        Optimisation iterations each probe ran, int64 ``(P,)``.
    method, seconds, config:
        Estimator (``"zoo"``/``"nes"``), wall-clock seconds of the construction, and its settings.
    """

    x: torch.Tensor
    target: torch.Tensor
    probs: torch.Tensor
    reached: torch.Tensor
    queries: torch.Tensor
    iterations: torch.Tensor
    method: str
    seconds: float
    num_classes: int
    config: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.target.shape[0])

    @property
    def probes_per_class(self) -> int:
        return int(torch.bincount(self.target, minlength=self.num_classes).min())

    @property
    def confidence(self) -> torch.Tensor:
        """The original model's confidence in each probe's target class, ``(P,)``."""
        return self.probs[torch.arange(len(self)), self.target]

    def per_class(self, m: int) -> "ProbeSet":
        """The first ``m`` probes of every class (Table 3's "5 per class" rows reuse the 10-probe set)."""
        if m < 1 or m > self.probes_per_class:
            raise CourseError(f"Choose between 1 and {self.probes_per_class} probes per class; got {m}.")
        keep = torch.cat([torch.nonzero(self.target == c).flatten()[:m] for c in range(self.num_classes)])
        return ProbeSet(self.x[keep], self.target[keep], self.probs[keep], self.reached[keep],
                        self.queries[keep], self.iterations[keep], self.method, self.seconds,
                        self.num_classes, dict(self.config))

    def summary(self) -> dict:
        """Cost and quality of the construction (JSON-serialisable)."""
        return {
            "method": self.method, "probes": len(self), "probes_per_class": self.probes_per_class,
            "reached_share": float(self.reached.float().mean()),
            "median_confidence": float(self.confidence.median()),
            "queries_total": int(self.queries.sum()),
            "queries_per_probe_mean": float(self.queries.double().mean()),
            "queries_per_probe_median": float(self.queries.double().median()),
            "queries_per_reached_probe_mean": (float(self.queries[self.reached].double().mean())
                                               if bool(self.reached.any()) else None),
            "seconds": round(self.seconds, 2),
        }


def _initial_noise(n: int, input_shape, cfg: ProbeConfig, gen: torch.Generator) -> torch.Tensor:
    x = cfg.init_mean + cfg.init_std * torch.randn((n, *input_shape), generator=gen)
    return x.clamp_(0.0, 1.0)


def build_probes(api: BlackBoxAPI, *, num_classes: int, input_shape, probes_per_class: int = 10,
                 method: str = "zoo", config: ProbeConfig | None = None, seed: int = 0,
                 classes=None, progress: bool = True) -> ProbeSet:
    """Construct ``probes_per_class`` probing samples per class on the original model (eqs. 7-8).

    Parameters
    ----------
    api:
        The original model behind a :class:`BlackBoxAPI` with ``output="probs"``.
    num_classes:
        Number of classes K of the task (public knowledge).
    input_shape:
        Shape of one input, ``(C, H, W)`` or ``(D,)``.
    probes_per_class:
        m, probes per target class (paper: 10).
    method:
        ``"zoo"`` (coordinate ZOO-ADAM, the paper's choice) or ``"nes"`` (query-efficient).
    config:
        :class:`ProbeConfig` (default: ``ProbeConfig.for_profile()``).
    seed:
        Seeds the initial noise and the estimators' random choices.
    classes:
        Target classes to build probes for (default: all ``num_classes``); the benchmark uses a few.

    Returns
    -------
    ProbeSet
        Probes grouped by class, the original model's prediction vectors and the queries spent.

    Used by chapter 4 and chapter 6.
    """
    if not isinstance(api, PredictionAPI):
        raise CourseError("build_probes needs a BlackBoxAPI: the attacker only has query access.")
    if api.output != "probs":
        raise CourseError("Probe construction needs probability outputs; this API answers labels only. "
                          "Use course_lib.attacks.label_only for a label-only API.")
    check_choice(method, PROBE_METHODS, "probe method")
    if num_classes < 2:
        raise CourseError(f"num_classes must be at least 2; got {num_classes}.")
    if probes_per_class < 1:
        raise CourseError(f"probes_per_class must be at least 1; got {probes_per_class}.")
    cfg = (config or ProbeConfig.for_profile()).validated()
    input_shape = tuple(int(s) for s in input_shape)
    gen = torch.Generator().manual_seed(int(seed))
    classes = list(range(num_classes)) if classes is None else [int(c) for c in classes]
    if not classes or any(not 0 <= c < num_classes for c in classes):
        raise CourseError(f"classes must be a non-empty list of classes in 0..{num_classes - 1}.")
    n = len(classes) * probes_per_class
    target = torch.tensor(classes, dtype=torch.long).repeat_interleave(probes_per_class)
    x0 = _initial_noise(n, input_shape, cfg, gen)
    state = (ZooEstimator if method == "zoo" else NesEstimator)(x0, cfg, input_shape)

    queries = torch.zeros(n, dtype=torch.long)
    iterations = torch.zeros(n, dtype=torch.long)
    probs = api.query(x0)
    queries += 1
    active = probs[torch.arange(n), target] < cfg.target_confidence
    start = time.perf_counter()
    per_iter = 2 * (min(cfg.zoo_coordinates, int(np.prod(input_shape))) if method == "zoo" else cfg.nes_samples) + 1
    bar = tqdm(total=n, desc=f"probes ({method})", disable=not progress, leave=False)
    bar.update(int((~active).sum()))
    it = 0
    while bool(active.any()):
        adapt_threads()
        # a probe stops once one more iteration would exceed its budget
        active &= queries + per_iter <= cfg.max_queries
        rows = torch.nonzero(active).flatten()
        if len(rows) == 0:
            break
        if method == "zoo" and it % cfg.zoo_importance_every == 0 and it > 0:
            state.refresh_importance()
        used = state.step(api, rows, target[rows], gen)
        cur = state.x[rows].float().reshape(len(rows), *input_shape)
        probs[rows] = api.query(cur)
        queries[rows] += used + 1
        iterations[rows] += 1
        done = probs[rows, target[rows]] >= cfg.target_confidence
        active[rows[done]] = False
        bar.update(int(done.sum()))
        it += 1
    bar.close()
    x = state.x.float().reshape(n, *input_shape)
    if cfg.calibration_band > 0:
        x, probs, used = calibrate_probes(api, x, probs, target, cfg)
        queries += used
    conf = probs[torch.arange(n), target]
    return ProbeSet(x=x, target=target, probs=probs, reached=conf >= cfg.target_confidence, queries=queries,
                    iterations=iterations, method=method, seconds=time.perf_counter() - start,
                    num_classes=num_classes, config=cfg.to_dict())


def calibrate_probes(api: BlackBoxAPI, x: torch.Tensor, probs: torch.Tensor, target: torch.Tensor,
                     cfg: ProbeConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Pull over-confident probes back to the confidence target (see ``ProbeConfig.calibration_band``).

    ``x`` ``(P, ...)`` probes, ``probs`` ``(P, K)`` the API's answers on them, ``target`` ``(P,)``.
    For each probe with ``1 - p_t < band * (1 - target_confidence)``, the reference is a probe of
    another class on which ``p_t`` is below the target (the first such probe); bisection on
    ``a`` in ``x_a = (1 - a) x + a * reference`` stops as soon as ``1 - p_t(x_a)`` lies in the band.
    A probe with no usable reference, or whose bisection does not land in the band, keeps its
    most confident point that still meets the target. Black-box: uses only ``api.query``.

    Returns the new probes, their probability vectors and the queries spent per probe ``(P,)``.
    """
    n = len(target)
    x, probs = x.clone(), probs.clone()
    used = torch.zeros(n, dtype=torch.long)
    gap = 1.0 - cfg.target_confidence
    low = cfg.calibration_band * gap
    err = 1.0 - probs[torch.arange(n), target]
    rows = torch.nonzero(err < low).flatten()
    if len(rows) == 0:
        return x, probs, used
    refs = torch.full((n,), -1, dtype=torch.long)
    for r in rows.tolist():
        t = int(target[r])
        usable = torch.nonzero((target != t) & (probs[:, t] < cfg.target_confidence)).flatten()
        if len(usable):
            refs[r] = int(usable[0])
    rows = rows[refs[rows] >= 0]
    if len(rows) == 0:
        return x, probs, used
    lo = torch.zeros(len(rows), dtype=torch.float64)       # a that is still over-confident
    hi = torch.ones(len(rows), dtype=torch.float64)        # a that misses the target
    best = torch.zeros(len(rows), dtype=torch.float64)     # a of the point kept so far
    best_probs = probs[rows].clone()
    open_ = torch.ones(len(rows), dtype=torch.bool)
    start, ref = x[rows], x[refs[rows]]
    shape = (-1,) + (1,) * (x.dim() - 1)                   # broadcasts a per-probe a over the input
    for _ in range(cfg.calibration_steps):
        if not bool(open_.any()):
            break
        idx = torch.nonzero(open_).flatten()
        a = 0.5 * (lo[idx] + hi[idx])
        cand = ((1 - a).view(shape) * start[idx].double() + a.view(shape) * ref[idx].double()).float()
        p = api.query(cand)
        used[rows[idx]] += 1
        e = 1.0 - p[torch.arange(len(idx)), target[rows[idx]]]
        meets = e <= gap
        lo[idx] = torch.where(e < low, a, lo[idx])
        hi[idx] = torch.where(meets, hi[idx], a)
        keep = meets & (a >= best[idx])
        best[idx] = torch.where(keep, a, best[idx])
        best_probs[idx[keep]] = p[keep]
        open_[idx[meets & (e >= low)]] = False
    x[rows] = ((1 - best).view(shape) * start.double() + best.view(shape) * ref.double()).float()
    probs[rows] = best_probs
    return x, probs, used


# --------------------------------------------------------------------------- probing (eqs. 9-11)
