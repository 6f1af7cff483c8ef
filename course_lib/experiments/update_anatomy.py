"""Why label inference misses a class: the anatomy of the approximate-unlearning update (chapter 4).

The developer's view (weights in hand), used to *explain* the black-box attack of
:mod:`course_lib.attacks.probes`, never by it. Approximate unlearning (eqs. 12-13) adds

    u = (eta m / b) * sum_i dL(f_M0(x_i), y_i)/dtheta

to M. The update is a sum over the removed samples and over parameters, so it can be taken apart:

* ``"whole"``       -- u itself (what ``setup.unlearn(classes, forget_share, "approximate")`` deploys);
* ``"head"``        -- only the classifier head's rows of u (the last ``nn.Linear``); every other
                       parameter keeps M's value;
* ``"features"``    -- only the feature extractor's part of u (everything but the head);
* ``"top_sample"``  -- the update of the single removed sample with the largest loss at M0.

For each part, the same probes are sent to M and to "M plus that part" through the black-box API,
and eqs. (9)-(11) give a confidence drop beta and an inferred class. Cross-entropy gradients scale
with the error mass ``1 - p_y(x_i)``, so on a well-trained M0 the one or two removed samples that M0
fits worst carry most of u; their feature-layer gradient can move the probes of *another* class more
than the head's class-specific change moves the unlearned class's probes. This module measures that.

Public API
----------
``run_update_anatomy(setup, probes, *, classes=None, forget_share=1.0)`` -> :class:`UpdateAnatomyResult`
    ``.accuracy(part)``, ``.table()`` (pandas), ``.plot(unlearned_class)``, ``.to_dict()``.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..attacks.probes import ProbeSet
from ..attacks.unlearned_label import confidence_drop
from ..errors import CourseError, check_range
from ..recipes import Result, recipe
from ..models import classifier_head, flatten
from ..unlearn.paper import add_scaled_gradient, approximate_step, summed_gradient

PARTS = ("whole", "head", "features", "top_sample")


@dataclass
class ClassAnatomy:
    """The approximate update that unlearns (a share of) one class, taken apart.

    Attributes
    ----------
    unlearned_class:
        The class whose samples were removed.
    beta:
        For each part in :data:`PARTS`, the confidence drop of eq. (10) per probe class, ``K`` floats.
    inferred:
        For each part, the class of eq. (11) (largest drop).
    losses:
        Cross-entropy of every removed sample at M0 (nats), largest first.
    top_sample_index:
        Index into X_u (``setup.subset``) of the removed sample with the largest loss.
    top_sample_prediction:
        The class M0 predicts for that sample.
    top_sample_cosine:
        Cosine between that sample's gradient and the summed gradient u (all parameters).
    head_norm_share:
        ``||u_head|| / ||u||``: the share of the update's length that lies in the classifier head.
    """

    unlearned_class: int
    beta: dict
    inferred: dict
    losses: list
    top_sample_index: int
    top_sample_prediction: int
    top_sample_cosine: float
    head_norm_share: float

    @property
    def top_loss_share(self) -> float:
        """Share of the removed samples' summed loss that the single largest loss carries."""
        return self.losses[0] / max(sum(self.losses), 1e-300)


@dataclass
class UpdateAnatomyResult(Result):
    """:class:`ClassAnatomy` for several unlearned classes, with the same probes and share ``forget_share``."""

    forget_share: float
    rows: list

    def accuracy(self, part: str = "whole") -> float:
        """Share of unlearned classes that part ``part`` of the update lets eq. (11) name correctly."""
        if part not in PARTS:
            raise CourseError(f"Unknown part {part!r}; choose one of {', '.join(PARTS)}.")
        return float(np.mean([r.inferred[part] == r.unlearned_class for r in self.rows]))

    def row(self, unlearned_class: int) -> ClassAnatomy:
        for r in self.rows:
            if r.unlearned_class == int(unlearned_class):
                return r
        raise CourseError(f"Class {unlearned_class} is not among the analysed classes "
                          f"{[r.unlearned_class for r in self.rows]}.")

    def table(self):
        """One row per unlearned class: the class each part points to, and why."""
        import pandas as pd

        return pd.DataFrame([{
            "unlearned class": r.unlearned_class,
            **{f"inferred ({p})": r.inferred[p] for p in PARTS},
            "summed loss at M0": round(sum(r.losses), 3),
            "largest loss": round(r.losses[0], 3),
            "its share": round(r.top_loss_share, 2),
            "M0 reads it as": r.top_sample_prediction,
            "cos(its gradient, u)": round(r.top_sample_cosine, 2),
            "head share of |u|": round(r.head_norm_share, 3),
        } for r in self.rows])

    def plot(self, unlearned_class: int):
        """One panel per part: beta per probe class, each panel on its own scale.

        The head part's drops are one to two orders of magnitude smaller than the feature part's, so
        a shared axis would hide them. The unlearned class's bar is drawn in red.
        """
        import matplotlib.pyplot as plt

        r = self.row(unlearned_class)
        k = len(r.beta["whole"])
        fig, axes = plt.subplots(1, len(PARTS), figsize=(3.0 * len(PARTS), 2.6), sharex=True)
        colors = ["tab:red" if c == r.unlearned_class else "tab:grey" for c in range(k)]
        for ax, part in zip(axes, PARTS):
            ax.bar(np.arange(k), r.beta[part], color=colors)
            ax.axhline(0, color="black", linewidth=0.8)
            ax.set_xticks(range(k))
            ax.set_title(f"{part}: names {r.inferred[part]}", fontsize=10, pad=14)
            ax.ticklabel_format(axis="y", style="sci", scilimits=(0, 0))
            ax.set_xlabel("probe class")
        axes[0].set_ylabel("confidence drop β")
        fig.suptitle(f"class {r.unlearned_class} unlearned (p_u = {self.forget_share}): the update taken apart",
                     fontsize=11)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return {"forget_share": self.forget_share, "accuracy": {p: self.accuracy(p) for p in PARTS},
                "rows": [asdict(r) for r in self.rows]}


@recipe("update-anatomy", chapter="4", command="course-lib update-anatomy")
def run_update_anatomy(setup, probes: ProbeSet, *, classes=None, forget_share: float = 1.0,
                       progress: bool = True) -> UpdateAnatomyResult:
    """Take apart the approximate update that unlearns each class in ``classes`` (default: all).

    Parameters
    ----------
    setup:
        A :class:`~course_lib.experiments.label_inference.ProbingSetup` (M0, X_u and M).
    probes:
        Probes built on M (``setup.probes(...)``); the same ones the attack uses.
    classes:
        Unlearned classes to analyse, one at a time (default ``range(num_classes)``).
    forget_share:
        p_u, the share of each class that is removed (the same draw as ``setup.unlearn``).

    Returns
    -------
    :class:`UpdateAnatomyResult`. Its ``"whole"`` part is exactly the model ``setup.unlearn([c], forget_share,
    "approximate")`` returns, so its inferred classes are the attack's.

    Used by chapter 4 ("Why the attack misses a class").
    """
    check_range(float(forget_share), 0.0, 1.0, "The forget share p_u", low_open=True)
    if probes.num_classes != setup.num_classes:
        raise CourseError(f"The probes were built for {probes.num_classes} classes; this model has "
                          f"{setup.num_classes}. Build them with setup.probes(...).")
    classes = list(range(setup.num_classes)) if classes is None else [int(c) for c in classes]
    pipe = setup.pipeline
    scale = approximate_step(pipe)
    m0, deployed = pipe.pretrained, setup.deployed
    head = classifier_head(deployed)
    head_ids = {id(p) for p in head.parameters()}
    names = [n for n, _ in deployed.named_parameters()]
    head_names = {n for n, p in deployed.named_parameters() if id(p) in head_ids}
    feature_names = set(names) - head_names
    is_head = torch.tensor([n in head_names for n in names])

    before = setup.api(name="original").query(probes.x)
    rows = []
    for c in tqdm(classes, desc="anatomy of the update", disable=not progress):
        idx = setup.forget_indices([c], forget_share)
        forget = setup.subset.subset(idx)
        m0.eval()
        with torch.no_grad():
            logits = m0(forget.x.to(next(m0.parameters()).device)).cpu()
        losses = F.cross_entropy(logits, forget.y, reduction="none")
        top = int(torch.argmax(losses))
        grads = summed_gradient(m0, forget)
        top_grads = summed_gradient(m0, forget.subset(torch.tensor([top])))
        models = {
            "whole": add_scaled_gradient(deployed, grads, scale),
            "head": add_scaled_gradient(deployed, grads, scale, only=head_names),
            "features": add_scaled_gradient(deployed, grads, scale, only=feature_names),
            "top_sample": add_scaled_gradient(deployed, top_grads, scale),
        }
        beta, inferred = {}, {}
        for part, model in models.items():
            after = setup.api(model, name=f"unlearned ({part})").query(probes.x)
            b = torch.diagonal(confidence_drop(before, after, probes.target, setup.num_classes))
            beta[part] = [float(v) for v in b]
            inferred[part] = int(torch.argmax(b))
        g, g1 = flatten(grads), flatten(top_grads)
        norms = torch.stack([gr.double().norm().cpu() for gr in grads])
        rows.append(ClassAnatomy(
            unlearned_class=c, beta=beta, inferred=inferred,
            losses=[float(v) for v in losses.sort(descending=True).values],
            top_sample_index=int(idx[top]), top_sample_prediction=int(logits[top].argmax()),
            top_sample_cosine=float(torch.dot(g, g1) / (g.norm() * g1.norm()).clamp_min(1e-300)),
            head_norm_share=float(norms[is_head].norm() / norms.norm().clamp_min(1e-300))))
    return UpdateAnatomyResult(forget_share=float(forget_share), rows=rows)
