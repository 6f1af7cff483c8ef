"""Probing the unlearned model: which class was unlearned (eqs. 9-11 of the inversion paper, chapter 4).

For the probes of class y_t, ``Delta_p = 1/m sum_i (Y_hat_i - Y_i)`` (eq. 9), ``beta_{y_t} =
Delta_p[y_t]`` (eq. 10, the drop of the target-class confidence), and the inferred class is
``argmax_i beta_i`` (eq. 11); for K unlearned classes the top-K of beta (Section 3.2.2, last
paragraph).

``probe_unlearned(original_api, unlearned_api, probes, *, k=1)`` -> :class:`LabelInference` (attack code: APIs only)
``infer_unlearned_label(original, unlearned, probes, *, k=1)``   the same, wrapping two ``nn.Module`` s in
                                                                ``BlackBoxAPI(output="probs")`` (the developer's view)

The attack functions see only :class:`~course_lib.attacks.blackbox.BlackBoxAPI` objects.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ..errors import CourseError, check_choice
from .blackbox import BlackBoxAPI, PredictionAPI
from .probes import ProbeSet


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


GROUPINGS = ("target", "predicted")


def confidence_drop(probs_original: torch.Tensor, probs_unlearned: torch.Tensor, target: torch.Tensor,
                    num_classes: int, *, grouping: str = "target") -> torch.Tensor:
    """Eq. (9) per class: ``Delta[t] = mean over the probes of class t of (Y_hat - Y)``, ``(K, K)``.

    ``probs_original``, ``probs_unlearned``: ``(P, K)`` probability vectors; ``target``: ``(P,)``.
    ``grouping`` says which probes belong to class t: ``"predicted"`` -- those the original model
    predicts as t (the paper's Section 3.2.2) -- or ``"target"`` -- those built for t (the course's
    default; the same probes whenever construction reached its confidence target, and it keeps a
    probe that fell short in the class it was built for). Used by chapter 4 (exercise 1).
    """
    check_choice(grouping, GROUPINGS, "probe grouping")
    diff = probs_original.double() - probs_unlearned.double()
    groups = probs_original.argmax(1) if grouping == "predicted" else target
    delta = torch.zeros((num_classes, num_classes), dtype=torch.float64)
    for c in range(num_classes):
        sel = groups == c
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
                    k: int = 1, grouping: str = "target") -> LabelInference:
    """Query both APIs with the probes and infer the ``k`` unlearned classes (eqs. 9-11).

    The original model's prediction vectors are queried again (they equal ``probes.probs`` when the
    original API still serves the model the probes were built on; re-querying lets a defended
    original be probed too). Attack code: sees only the two APIs.

    Used by chapter 4 and chapter 6.
    """
    for api in (original_api, unlearned_api):
        if not isinstance(api, PredictionAPI):
            raise CourseError("probe_unlearned needs BlackBoxAPI objects (query access only).")
        if api.output != "probs":
            raise CourseError("Probing compares probability vectors; this API answers labels only. "
                              "Use course_lib.attacks.label_only.infer_label_only instead.")
    start = time.perf_counter()
    q0, q1 = original_api.queries, unlearned_api.queries
    y_hat = original_api.query(probes.x)
    y_u = unlearned_api.query(probes.x)
    delta = confidence_drop(y_hat, y_u, probes.target, probes.num_classes, grouping=grouping)
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
        return obj if isinstance(obj, PredictionAPI) else BlackBoxAPI(obj, "probs", name=name)

    return probe_unlearned(as_api(original, "original"), as_api(unlearned, "unlearned"), probes, k=k)
