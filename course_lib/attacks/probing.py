"""Label inference by probing (Section 3.2.2 of the inversion paper, eqs. 7-11), black-box only.

A user who can only *query* the deployed model M (before unlearning) and M_u (after) learns which
class was unlearned:

1. **Probe construction** (eqs. 7-8). Start from Gaussian noise in [0, 1] and push each probe
   x' towards a target class y_t until the original model's confidence reaches
   ``target_confidence`` (paper: 1 - 1e-3), minimising

   ``g(x', y_t) = max_{i != y_t} log p_i(x') - log p_{y_t}(x')``   subject to x' in [0, 1]^N.

   The paper writes eq. (8) with logits Z but calls them "predicted probabilities"; a user sees
   only probabilities, so we use their logarithm, as the ZOO paper does for its black-box loss
   (Chen et al. 2017, eq. 5). A difference of log-probabilities equals the difference of logits,
   so this *is* eq. (8) evaluated from what the API returns. ``m = probes_per_class`` probes per
   class; the prediction vector of the original model on each probe is recorded.

   Two zeroth-order gradient estimators (both use only ``api.query``):

   ``method="zoo"`` -- ZOO-ADAM (Chen et al. 2017, Alg. 2), as in the paper: every iteration picks
   ``zoo_coordinates`` pixel coordinates (importance sampling: probabilities proportional to the
   max-pooled absolute change of each ``zoo_block`` x ``zoo_block`` region, refreshed every
   ``zoo_importance_every`` iterations and mixed with 10 % uniform so no pixel is starved),
   estimates each partial derivative by a symmetric finite difference with step ``zoo_h``
   (2 queries per coordinate) and takes a coordinate-wise Adam step, then projects onto [0, 1].

   ``method="nes"`` -- the query-efficient estimator (Ilyas et al. 2018, "NES"): antithetic
   Gaussian directions drawn in a reduced ``nes_resolution`` x ``nes_resolution`` grid and
   upsampled (bilinear) to the image, ``g ~ 1/(2 n sigma) sum_k [f(x + sigma u_k) - f(x - sigma u_k)] u_k``
   with ``n = nes_samples`` pairs, and an Adam step on the whole reduced grid. One iteration costs
   ``2 n + 1`` queries but moves every pixel at once.

   Both stop a probe as soon as its confidence reaches the target or its query budget
   ``max_queries`` is spent; :class:`ProbeSet` reports the queries each probe used.

2. **Probing the unlearned model** (eqs. 9-11). For the probes of class y_t,
   ``Delta_p = 1/m sum_i (Y_hat_i - Y_i)`` (eq. 9), ``beta_{y_t} = Delta_p[y_t]`` (eq. 10, the drop of
   the target-class confidence), and the inferred class is ``argmax_i beta_i`` (eq. 11); for K
   unlearned classes the top-K of beta (Section 3.2.2, last paragraph).

Public API (chapter 4; chapter 6's defenses call it too)
--------------------------------------------------------
``ProbeConfig.for_profile(profile, **overrides)``            budgets per profile
``build_probes(api, *, num_classes, input_shape, probes_per_class, method, config, seed)`` -> :class:`ProbeSet`
``probe_unlearned(original_api, unlearned_api, probes, *, k=1)`` -> :class:`LabelInference` (attack code: APIs only)
``infer_unlearned_label(original, unlearned, probes, *, k=1)``   same, wrapping two ``nn.Module`` s in
                                                                ``BlackBoxAPI(output="probs")`` (the developer's view)

The attack functions see only :class:`~course_lib.attacks.blackbox.BlackBoxAPI` objects.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..threads import adapt as adapt_threads
from ..budgets import Budget
from ..errors import CourseError, check_choice, check_range
from .blackbox import BlackBoxAPI

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


@dataclass
class LabelInference:
    """Outcome of probing the unlearned model (eqs. 9-11).

    Attributes
    ----------
    delta:
        ``Delta_p`` for every target class, float64 ``(K, K)``: row ``t`` is eq. (9) averaged over
        the probes of class t (original minus unlearned probability vectors).
    beta:
        ``beta_t = delta[t, t]`` (eq. 10), the confidence drop of each class, ``(K,)``.
    inferred:
        The ``k`` classes with the largest beta, largest first (eq. 11 for ``k = 1``).
    queries:
        Queries this step spent on the original and the unlearned API.
    """

    delta: torch.Tensor
    beta: torch.Tensor
    inferred: list[int]
    queries: dict
    seconds: float

    def to_dict(self) -> dict:
        return {"inferred": list(self.inferred), "beta": [float(b) for b in self.beta],
                "queries": dict(self.queries), "seconds": round(self.seconds, 3)}


# --------------------------------------------------------------------------- the loss (eq. 8)

def margin_loss(probs: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Eq. (8) from probabilities: ``max_{i != t} log p_i - log p_t`` for each row, ``(N,)``.

    ``probs`` ``(N, K)`` float64, ``target`` ``(N,)``. Negative once the target class wins.
    Used by chapter 4 (shown to the learner, and exercise 3).
    """
    logp = torch.log(probs.clamp_min(1e-300))
    own = logp.gather(1, target.view(-1, 1)).squeeze(1)
    others = logp.scatter(1, target.view(-1, 1), float("-inf"))
    return others.max(dim=1).values - own


def probe_loss(probs: torch.Tensor, target: torch.Tensor, loss: str = "margin") -> torch.Tensor:
    """The objective a probe minimises: :func:`margin_loss` or the cross-entropy ``-log p_t``."""
    if loss == "margin":
        return margin_loss(probs, target)
    return -torch.log(probs.gather(1, target.view(-1, 1)).squeeze(1).clamp_min(1e-300))


def _initial_noise(n: int, input_shape, cfg: ProbeConfig, gen: torch.Generator) -> torch.Tensor:
    x = cfg.init_mean + cfg.init_std * torch.randn((n, *input_shape), generator=gen)
    return x.clamp_(0.0, 1.0)


def _adam(m, v, t, g, beta1=0.9, beta2=0.999, eps=1e-8):
    """In-place Adam moments; returns the bias-corrected step direction m_hat / (sqrt(v_hat) + eps)."""
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return m_hat / (v_hat.sqrt() + eps)


# --------------------------------------------------------------------------- ZOO

class _ZooState:
    """Coordinate-wise ZOO-ADAM state for a batch of probes (flattened to ``(P, N)``)."""

    def __init__(self, x0: torch.Tensor, cfg: ProbeConfig, input_shape):
        p = x0.shape[0]
        self.x0 = x0.reshape(p, -1).double()
        self.x = self.x0.clone()
        self.m = torch.zeros_like(self.x)
        self.v = torch.zeros_like(self.x)
        self.t = torch.zeros_like(self.x)
        self.cfg = cfg
        self.shape = tuple(input_shape)
        self.weights = torch.ones_like(self.x)

    def refresh_importance(self) -> None:
        """ZOO's importance sampling: max-pool |x - x0| over blocks, upsample, mix with uniform."""
        change = (self.x - self.x0).abs().float()
        if len(self.shape) == 3 and min(self.shape[1:]) >= self.cfg.zoo_block:
            img = change.reshape(-1, *self.shape)
            k = self.cfg.zoo_block
            pooled = F.max_pool2d(img, k, stride=k, ceil_mode=True)
            up = F.interpolate(pooled, scale_factor=k, mode="nearest")[..., :self.shape[1], :self.shape[2]]
            imp = up.reshape(change.shape[0], -1).double()
        else:
            imp = change.double()
        total = imp.sum(dim=1, keepdim=True)
        uniform = torch.full_like(imp, 1.0 / imp.shape[1])
        prob = torch.where(total > 0, imp / total.clamp_min(1e-12), uniform)
        self.weights = 0.9 * prob + 0.1 * uniform

    def step(self, api: BlackBoxAPI, rows: torch.Tensor, target: torch.Tensor, gen: torch.Generator):
        """One iteration for probes ``rows``: 2B finite-difference queries + 1 query of the new point."""
        cfg = self.cfg
        n_coord = self.x.shape[1]
        b = min(cfg.zoo_coordinates, n_coord)
        coords = torch.multinomial(self.weights[rows].float(), b, replacement=False, generator=gen)  # (R, B)
        r = len(rows)
        base = self.x[rows]                                             # (R, N)
        plus = base.unsqueeze(1).repeat(1, b, 1)                        # (R, B, N)
        minus = plus.clone()
        rr = torch.arange(r).view(r, 1).expand(r, b)
        bb = torch.arange(b).view(1, b).expand(r, b)
        plus[rr, bb, coords] += cfg.zoo_h      # copy (probe, j) moves only coordinate coords[probe, j]
        minus[rr, bb, coords] -= cfg.zoo_h
        batch = torch.cat([plus, minus], dim=1).reshape(r * 2 * b, *self.shape)
        tgt = target.repeat_interleave(2 * b)
        f = probe_loss(api.query(batch.float()), tgt, cfg.loss).reshape(r, 2, b)
        # the API clips to [0, 1]; a one-sided difference at the box edge is still a fair estimate
        hi = (base.gather(1, coords) + cfg.zoo_h).clamp(max=1.0)
        lo = (base.gather(1, coords) - cfg.zoo_h).clamp(min=0.0)
        grad = (f[:, 0] - f[:, 1]) / (hi - lo).clamp_min(1e-12)
        rows_e = rows.view(-1, 1).expand(-1, b)
        self.t[rows_e, coords] += 1
        m, v, t = self.m[rows_e, coords], self.v[rows_e, coords], self.t[rows_e, coords]
        direction = _adam(m, v, t, grad)
        self.m[rows_e, coords], self.v[rows_e, coords] = m, v
        self.x[rows_e, coords] = (base.gather(1, coords) - cfg.zoo_lr * direction).clamp(0.0, 1.0)
        return 2 * b


class _NesState:
    """NES state for a batch of probes: Adam moments on the reduced grid."""

    def __init__(self, x0: torch.Tensor, cfg: ProbeConfig, input_shape):
        self.x = x0.double().clone()
        self.cfg = cfg
        self.shape = tuple(input_shape)
        if len(self.shape) == 3:
            c, h, w = self.shape
            self.small = (c, min(cfg.nes_resolution, h), min(cfg.nes_resolution, w))
        else:
            self.small = self.shape
        self.m = torch.zeros((x0.shape[0], *self.small), dtype=torch.float64)
        self.v = torch.zeros_like(self.m)
        self.t = torch.zeros(x0.shape[0], dtype=torch.float64)

    def _up(self, z: torch.Tensor) -> torch.Tensor:
        if len(self.shape) == 3 and self.small != self.shape:
            return F.interpolate(z, size=self.shape[1:], mode="bilinear", align_corners=False)
        return z

    def step(self, api: BlackBoxAPI, rows: torch.Tensor, target: torch.Tensor, gen: torch.Generator):
        cfg = self.cfg
        r, n = len(rows), cfg.nes_samples
        u = torch.randn((r * n, *self.small), generator=gen, dtype=torch.float64)
        du = self._up(u).reshape(r, n, *self.shape)
        base = self.x[rows].unsqueeze(1)
        batch = torch.cat([base + cfg.nes_sigma * du, base - cfg.nes_sigma * du], dim=1)
        batch = batch.reshape(r * 2 * n, *self.shape)
        tgt = target.repeat_interleave(2 * n)
        f = probe_loss(api.query(batch.float()), tgt, cfg.loss).reshape(r, 2, n)
        diff = (f[:, 0] - f[:, 1]) / (2 * cfg.nes_sigma * n)            # (R, n)
        grad = (diff.view(r, n, *([1] * len(self.small))) * u.view(r, n, *self.small)).sum(1)
        self.t[rows] += 1
        t = self.t[rows].view(-1, *([1] * len(self.small)))
        m, v = self.m[rows], self.v[rows]
        direction = _adam(m, v, t, grad)
        self.m[rows], self.v[rows] = m, v
        self.x[rows] = (self.x[rows] - cfg.nes_lr * self._up(direction)).clamp(0.0, 1.0)
        return 2 * n


# --------------------------------------------------------------------------- probe construction

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
    if not isinstance(api, BlackBoxAPI):
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
    state = (_ZooState if method == "zoo" else _NesState)(x0, cfg, input_shape)

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

def confidence_drop(probs_original: torch.Tensor, probs_unlearned: torch.Tensor, target: torch.Tensor,
                    num_classes: int) -> torch.Tensor:
    """Eq. (9) per target class: ``Delta[t] = mean over probes of class t of (Y_hat - Y)``, ``(K, K)``.

    ``probs_original``, ``probs_unlearned``: ``(P, K)`` probability vectors; ``target``: ``(P,)``.
    Used by chapter 4 (exercise 1).
    """
    diff = probs_original.double() - probs_unlearned.double()
    delta = torch.zeros((num_classes, num_classes), dtype=torch.float64)
    for c in range(num_classes):
        sel = target == c
        if bool(sel.any()):
            delta[c] = diff[sel].mean(0)
    return delta


def top_k_classes(beta: torch.Tensor, k: int) -> list[int]:
    """The ``k`` classes with the largest ``beta`` (eq. 11 and its top-K extension), largest first.

    Used by chapter 4 (Fig. 10, exercise 2).
    """
    if not 1 <= k <= len(beta):
        raise CourseError(f"k must lie between 1 and the number of classes ({len(beta)}); got {k}.")
    return [int(i) for i in torch.argsort(beta, descending=True, stable=True)[:k]]


def probe_unlearned(original_api: BlackBoxAPI, unlearned_api: BlackBoxAPI, probes: ProbeSet, *,
                    k: int = 1) -> LabelInference:
    """Query both APIs with the probes and infer the ``k`` unlearned classes (eqs. 9-11).

    The original model's prediction vectors are queried again (they equal ``probes.probs`` when the
    original API still serves the model the probes were built on; re-querying lets a defended
    original be probed too). Attack code: sees only the two APIs.

    Used by chapter 4 and chapter 6.
    """
    for api in (original_api, unlearned_api):
        if not isinstance(api, BlackBoxAPI):
            raise CourseError("probe_unlearned needs BlackBoxAPI objects (query access only).")
        if api.output != "probs":
            raise CourseError("Probing compares probability vectors; this API answers labels only. "
                              "Use course_lib.attacks.label_only.infer_label_only instead.")
    start = time.perf_counter()
    q0, q1 = original_api.queries, unlearned_api.queries
    y_hat = original_api.query(probes.x)
    y_u = unlearned_api.query(probes.x)
    delta = confidence_drop(y_hat, y_u, probes.target, probes.num_classes)
    beta = torch.diagonal(delta).clone()
    return LabelInference(delta=delta, beta=beta, inferred=top_k_classes(beta, k),
                          queries={"original": original_api.queries - q0, "unlearned": unlearned_api.queries - q1},
                          seconds=time.perf_counter() - start)


def infer_unlearned_label(original, unlearned, probes: ProbeSet, *, k: int = 1) -> LabelInference:
    """Developer-side convenience: wrap two models (``nn.Module``) in probability APIs and probe.

    ``original`` and ``unlearned`` may also be :class:`BlackBoxAPI` objects already. Returns the
    inferred class(es) and beta, the per-class confidence drop (:class:`LabelInference`).

    Used by chapter 4 and chapter 6.
    """
    def as_api(obj, name):
        return obj if isinstance(obj, BlackBoxAPI) else BlackBoxAPI(obj, "probs", name=name)

    return probe_unlearned(as_api(original, "original"), as_api(unlearned, "unlearned"), probes, k=k)
