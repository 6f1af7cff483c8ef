"""Membership inference for unlearning evaluation (chapter 5): RUB's shadow-model MIA and SalUn's SVC MIA.

Shadow-model MIA (Shokri et al., 2017), as RUB uses it (Section 4.2)
--------------------------------------------------------------------
1. Shadow models imitate the target's training on data *disjoint* from the target's training set.
   Our choice: the dataset's **test split**, cut in two random halves per MIA seed; the shadow model
   trains on one half ("in", members) and never sees the other ("out", non-members). The target
   model never trained on the test split, so no sample is a member of both.
2. An attack classifier learns member vs non-member from the shadow model's output on in/out
   samples. Its features (:func:`attack_features`) are the output vector sorted in decreasing order
   plus the true label's probability, its log and the entropy: Shokri et al. feed the prediction
   vector and the label (one attack model per class); with a few hundred shadow samples we fit one
   label-aware model, a standardised logistic regression, instead.
3. Applied to the unlearned model's outputs on the forget set, the attack reports the **share of
   forget samples judged members** (RUB's MIA column; the retrained model's value is the reference).

SVC MIA-efficacy (Jia et al., 2023; Fan et al., 2024)
-----------------------------------------------------
An RBF support-vector classifier learns, on the *unlearned* model's confidence in the true label,
retain samples (members) vs test samples (non-members), balanced; **MIA-efficacy** is the share of
forget samples it calls non-members (higher means better forgetting; again compare with retrain).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..data import Dataset
from ..errors import CourseError
from ..train import predict_proba


def attack_features(probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """Attack-model features from softmax outputs ``(N, K)`` and labels ``(N,)`` -> ``(N, K + 3)``.

    Columns: the K probabilities sorted in decreasing order, p_y, log p_y, the entropy (nats).
    """
    p = probs.double().clamp_min(1e-12)
    p_y = p.gather(1, labels.view(-1, 1).long()).squeeze(1)
    entropy = -(p * p.log()).sum(1)
    feats = torch.cat([p.sort(1, descending=True).values, p_y[:, None], p_y.log()[:, None], entropy[:, None]], 1)
    return feats.numpy()


def shadow_halves(data: Dataset, seed: int) -> tuple[Dataset, Dataset]:
    """Split ``data`` (the shadow pool, e.g. the test split) into two random halves: (in, out)."""
    if len(data) < 4:
        raise CourseError(f"The shadow pool needs at least 4 samples; it has {len(data)}.")
    gen = torch.Generator().manual_seed(int(seed))
    perm = torch.randperm(len(data), generator=gen)
    half = len(data) // 2
    return data.subset(perm[:half].sort().values), data.subset(perm[half:2 * half].sort().values)


@dataclass
class ShadowMIA:
    """A fitted shadow-model membership-inference attack (Shokri et al., 2017).

    Attributes
    ----------
    classifier:
        scikit-learn pipeline (standardise + logistic regression) on :func:`attack_features`.
    seed:
        The MIA seed (shadow split, shadow model, attack classifier).
    shadow_accuracy:
        The attack's accuracy on its own shadow in/out data (0.5 = chance).
    seconds:
        Time to fit the attack classifier (the shadow model's training is not included).
    """

    classifier: object
    seed: int
    shadow_accuracy: float
    seconds: float
    info: dict = field(default_factory=dict)

    def is_member(self, probs: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
        """Boolean ``(N,)``: which (output, label) pairs the attack calls members."""
        if len(labels) == 0:
            return np.zeros(0, dtype=bool)
        return self.classifier.predict(attack_features(probs, labels)).astype(bool)

    def member_rate(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
        """Share of samples ``(x, y)`` judged members of ``model``'s training set (RUB's MIA, 0..1)."""
        if len(y) == 0:
            return float("nan")
        return float(self.is_member(predict_proba(model, x), y).mean())


def fit_shadow_mia(shadow_model: nn.Module, members: Dataset, non_members: Dataset, *, seed: int = 0) -> ShadowMIA:
    """Fit the attack classifier on a trained shadow model's outputs; used in chapter 5.

    ``members`` trained ``shadow_model``, ``non_members`` did not (same distribution, disjoint
    from the target's training data). The two are balanced by subsampling the larger one.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    t0 = time.perf_counter()
    n = min(len(members), len(non_members))
    if n < 2:
        raise CourseError("The shadow model needs at least 2 members and 2 non-members to fit the MIA.")
    rng = np.random.default_rng(int(seed))
    m_idx = np.sort(rng.choice(len(members), n, replace=False))
    o_idx = np.sort(rng.choice(len(non_members), n, replace=False))
    members, non_members = members.subset(m_idx), non_members.subset(o_idx)
    f_in = attack_features(predict_proba(shadow_model, members.x), members.y)
    f_out = attack_features(predict_proba(shadow_model, non_members.x), non_members.y)
    X = np.concatenate([f_in, f_out])
    y = np.concatenate([np.ones(len(f_in)), np.zeros(len(f_out))])
    clf = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, class_weight="balanced"))
    clf.fit(X, y)
    acc = float((clf.predict(X) == y).mean())
    return ShadowMIA(clf, int(seed), acc, time.perf_counter() - t0,
                     {"shadow_members": n, "shadow_non_members": n})


def svc_mia_efficacy(model: nn.Module, retain: Dataset, test: Dataset, forget_x: torch.Tensor,
                     forget_y: torch.Tensor, *, n_samples: int = 500, seed: int = 0) -> float:
    """SalUn's MIA-efficacy: share of forget samples an SVC calls *non-members* (0..1, higher = forgot).

    The SVC (RBF kernel, scikit-learn defaults) is fitted on ``model``'s probability of the true
    label: up to ``n_samples`` retain samples (label 1, members) against as many ``test`` samples
    (label 0). Pass, for class-wise forgetting, the test samples of the retained classes.
    """
    from sklearn.svm import SVC

    if len(forget_y) == 0:
        return float("nan")
    rng = np.random.default_rng(int(seed))
    n = min(n_samples, len(retain), len(test))
    if n < 2:
        raise CourseError("SVC MIA needs at least 2 retain and 2 test samples.")
    r = retain.subset(np.sort(rng.choice(len(retain), n, replace=False)))
    t = test.subset(np.sort(rng.choice(len(test), n, replace=False)))

    def conf(x, y):
        return predict_proba(model, x).gather(1, y.view(-1, 1)).numpy()

    X = np.concatenate([conf(r.x, r.y), conf(t.x, t.y)])
    y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = SVC(C=3.0, gamma="auto", kernel="rbf")
    clf.fit(X, y)
    return float(1.0 - clf.predict(conf(forget_x, forget_y)).mean())
