"""The probe objective (eq. 8) and its zeroth-order gradient estimators (chapter 4): only ``api.query``.

``ZooEstimator`` -- ZOO-ADAM (Chen et al. 2017, Alg. 2), as in the paper: every iteration picks
``zoo_coordinates`` pixel coordinates (importance sampling: probabilities proportional to the
max-pooled absolute change of each ``zoo_block`` x ``zoo_block`` region, refreshed every
``zoo_importance_every`` iterations and mixed with 10 % uniform so no pixel is starved), estimates
each partial derivative by a symmetric finite difference with step ``zoo_h`` (2 queries per
coordinate) and takes a coordinate-wise Adam step, then projects onto [0, 1].

``NesEstimator`` -- the query-efficient estimator (Ilyas et al. 2018, "NES"; an addition of the
course): antithetic Gaussian directions drawn in a reduced ``nes_resolution`` x ``nes_resolution``
grid and upsampled (bilinear) to the image,
``g ~ 1/(2 n sigma) sum_k [f(x + sigma u_k) - f(x - sigma u_k)] u_k`` with ``n = nes_samples``
pairs, and an Adam step on the whole reduced grid. One iteration costs ``2 n + 1`` queries but moves
every pixel at once.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .blackbox import BlackBoxAPI


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


def _adam(m, v, t, g, beta1=0.9, beta2=0.999, eps=1e-8):
    """In-place Adam moments; returns the bias-corrected step direction m_hat / (sqrt(v_hat) + eps)."""
    m.mul_(beta1).add_(g, alpha=1 - beta1)
    v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
    m_hat = m / (1 - beta1 ** t)
    v_hat = v / (1 - beta2 ** t)
    return m_hat / (v_hat.sqrt() + eps)


# --------------------------------------------------------------------------- ZOO

class ZooEstimator:
    """Coordinate-wise ZOO-ADAM state for a batch of probes (flattened to ``(P, N)``)."""

    def __init__(self, x0: torch.Tensor, cfg, input_shape):
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


class NesEstimator:
    """NES state for a batch of probes: Adam moments on the reduced grid."""

    def __init__(self, x0: torch.Tensor, cfg, input_shape):
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
