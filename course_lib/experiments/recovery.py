"""Feature recovery end to end: unlearn samples, estimate their gradient, invert it, score it.

Public API (chapter 3, the ``recover`` command, chapter 6's defenses)
--------------------------------------------------------------------
``attack_unlearned_model(original, unlearned, targets, *, label_mode="known", config=None, seed=0)``
    The server's attack on two given models (eq. 2, then eqs. 3-6), scored against ``targets``
    (the removed samples, which only the evaluation sees). Returns a :class:`RecoveryResult`.
``run_recovery(dataset, model, unlearning, num_forget, train_size, epochs, label, restarts,
iterations, profile, seed, ...)``
    The whole story of Section 3.2.1: the developer fine-tunes M0 on a training set (the private
    split Du, or ``train_size`` samples of it) to get M, unlearns ``num_forget`` samples with the
    paper's approximate or exact method, and the server attacks (M, M_u).

Seeds and precision
-------------------
``seed`` chooses the training subset, the removed samples and the attack's random starts; the
pre-trained M0 comes from the cached pipeline of ``pipeline_seed`` (default 0), so several seeds
reuse one M0. ``precision="float64"`` lets the developer keep M and M_u in double precision,
because float32 rounds away part of the tiny approximate-unlearning update of a well-fitted sample
(see :mod:`course_lib.attacks.gradient_estimation`); ``"float32"`` is the plain deployment, for
comparison; ``"auto"`` (the default) picks float64 where rounding matters (approximate unlearning,
training sets of one batch) and float32 elsewhere (see :func:`make_unlearning_case`).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from .. import metrics as M
from ..metrics import finite_mean, finite_median
from ..attacks.gradient_estimation import (estimate_gradient, estimate_gradient_reference, gradient_cosine,
                                           true_gradient)
from ..attacks.inversion import InversionConfig, InversionResult, attack_loss_terms, invert_gradient
from ..data import Dataset, sample_indices
from ..data import load as load_dataset
from ..models import default_model_for
from ..errors import CourseError, check_choice
from ..recipes import Result, recipe
from ..train import finetune, prepare_pipeline
from ..unlearn.paper import approximate_unlearning, effective_batch_size, exact_unlearning

UNLEARNING_METHODS = ("approximate", "exact")
LABEL_MODES = ("known", "unknown")
ESTIMATORS = ("difference", "reference")
PRECISIONS = ("auto", "float32", "float64")


@dataclass
class RecoveryResult(Result):
    """Recovered samples and how close they are to the removed ones.

    Attributes
    ----------
    samples:
        One dict per removed sample: ``index`` (row in the training set), ``label``,
        ``inferred_label`` (unknown-label attack, else ``None``), ``rmse``, ``psnr``, ``ssim``,
        ``lpips`` (images; ``None`` where not computable), ``mean_feature_error`` (tables).
    originals, recovered:
        ``(K, ...)`` in [0, 1]; ``recovered[i]`` is the recovery paired with ``originals[i]``
        (Hungarian matching on the MSE).
    summary:
        Means and medians of the metrics, the number of samples at PSNR >= 20 dB, the
        mean-image baseline PSNR, the inversion's attack loss and cosine, and the cosine between
        the estimated and the true gradient.
    cost:
        The inversion's cost (iterations, restarts, seconds, iterations per second, ...).
    settings:
        Everything that defines the run (dataset, method, sizes, profile, seed, config).
    lpips_reason:
        Why LPIPS is missing (``None`` when it was computed).
    """

    samples: list[dict]
    originals: torch.Tensor
    recovered: torch.Tensor
    summary: dict
    cost: dict
    settings: dict = field(default_factory=dict)
    lpips_reason: str | None = None
    kind: str = "image"
    feature_names: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        """JSON-serialisable summary (no tensors)."""
        return {"settings": self.settings, "samples": self.samples, "summary": self.summary,
                "cost": self.cost, "lpips_reason": self.lpips_reason}

    def table(self):
        """Per-sample metrics as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.samples).set_index("index")

    def plot(self, max_samples: int = 16):
        """Originals above recoveries (images) or feature lines (tables); returns the Figure."""
        from .. import viz

        k = min(len(self.originals), max_samples)
        if self.kind == "tabular":
            rows, names = [], []
            for i in range(min(k, 3)):
                rows += [self.originals[i], self.recovered[i]]
                names += [f"original #{self.samples[i]['index']}",
                          f"recovered (RMSE {self.samples[i]['rmse']:.3f})"]
            return viz.tabular_rows(rows, names, self.feature_names or None)
        titles = [f"{s['psnr']:.1f} dB" for s in self.samples[:k]]
        label = f"{self.settings.get('unlearning', '')}".strip()
        return viz.image_rows([self.originals[:k], self.recovered[:k]],
                              ["original", f"recovered\n{label}"], titles)


# --------------------------------------------------------------------------- the attack on two models

def score_recovery(originals: torch.Tensor, recovered: torch.Tensor, *, indices=None, labels=None,
                   inferred_labels=None, kind: str = "image") -> tuple[list[dict], torch.Tensor, list[int], str | None]:
    """Pair recovered with true samples (Hungarian, MSE) and compute the per-sample metrics.

    Returns ``(samples, recovered_in_pair_order, order, lpips_reason)``.
    """
    k = len(originals)
    order = M.match_samples(recovered, originals) if k > 1 else [0]
    rec = recovered[order]
    indices = list(range(k)) if indices is None else [int(i) for i in indices]
    rmse = M.rmse(originals, rec)
    rows = []
    lp_vals, lp_reason = (None, "LPIPS is defined for images only") if kind != "image" else M.lpips_distance(originals, rec)
    if kind == "image":
        ps, ss = M.psnr(originals, rec), M.ssim(originals, rec)
    else:
        fe = M.per_feature_error(originals, rec)
    for i in range(k):
        row = {"index": indices[i], "label": int(labels[i]) if labels is not None else None,
               "inferred_label": int(inferred_labels[order[i]]) if inferred_labels is not None else None,
               "rmse": rmse[i]}
        if kind == "image":
            row.update(psnr=ps[i], ssim=ss[i], lpips=lp_vals[i] if lp_vals is not None else None)
        else:
            row.update(mean_feature_error=float(fe[i].mean()), max_feature_error=float(fe[i].max()))
        rows.append(row)
    return rows, rec, order, lp_reason


def attack_unlearned_model(original: nn.Module, unlearned: nn.Module, targets: Dataset, *,
                           label_mode: str = "known", config: InversionConfig | None = None, seed: int = 0,
                           reference: nn.Module | None = None, estimator: str = "difference",
                           pretrained: nn.Module | None = None, train_size: int | None = None) -> RecoveryResult:
    """The server's feature-recovery attack on (M, M_u), scored against the removed ``targets``.

    Parameters
    ----------
    original, unlearned:
        theta (M) and theta_u (M_u), same architecture.
    targets:
        The removed samples (K of them). The attack uses only their number, their shape and, for
        ``label_mode="known"``, their labels; the features are used for scoring only.
    label_mode:
        ``"known"`` or ``"unknown"`` (``config.label_strategy`` says how unknown labels are handled).
    config:
        :class:`InversionConfig` (default: the active profile's).
    seed:
        Seeds the random starts.
    reference:
        Optional model at which to compute the removed samples' *true* gradient, to report the
        cosine of the estimate (M0 for the paper's methods); ``None`` skips it.
    estimator:
        ``"difference"``: eq. (2), the paper's attacker who sees only theta and theta_u.
        ``"reference"``: the attacker who also knows theta_0 (``pretrained``) and the training-set
        size (``train_size``), see :func:`~course_lib.attacks.gradient_estimation.estimate_gradient_reference`.

    Returns
    -------
    :class:`RecoveryResult`. Chapter 3 and chapter 6 call this.
    """
    check_choice(label_mode, LABEL_MODES, "label mode")
    check_choice(estimator, ESTIMATORS, "gradient estimator")
    config = config or InversionConfig.for_profile()
    if estimator == "difference":
        estimate = estimate_gradient(original, unlearned)
    else:
        if pretrained is None or train_size is None:
            raise CourseError("The 'reference' estimator needs the pre-trained model and the training-set size.")
        estimate = estimate_gradient_reference(original, unlearned, pretrained, train_size=train_size,
                                               num_forget=len(targets))
    labels = targets.y if label_mode == "known" else None
    inv: InversionResult = invert_gradient(original, estimate, input_shape=targets.input_shape,
                                           num_classes=targets.num_classes, num_forget=len(targets),
                                           labels=labels, config=config, seed=seed)
    originals = targets.x.detach().float().cpu()
    rows, rec, order, lp_reason = score_recovery(
        originals, inv.images, labels=targets.y, kind=targets.kind,
        inferred_labels=inv.labels if label_mode == "unknown" else None)
    summary = {}
    keys = ["rmse", "psnr", "ssim", "lpips"] if targets.kind == "image" else ["rmse", "mean_feature_error"]
    for key in keys:
        summary[f"mean_{key}"] = finite_mean([r[key] for r in rows])
        summary[f"median_{key}"] = finite_median([r[key] for r in rows])
    if targets.kind == "image":
        summary["recovered_at_20db"] = sum(1 for r in rows if r["psnr"] >= 20.0)
    if label_mode == "unknown":
        summary["label_accuracy"] = finite_mean([float(r["inferred_label"] == r["label"]) for r in rows])
        summary["analytic_labels"] = inv.analytic_labels.tolist()
    summary["attack_loss"] = inv.loss
    summary["attack_cosine"] = inv.cosine
    if reference is not None:
        summary["estimate_cosine"] = gradient_cosine(estimate, true_gradient(reference, targets))
    return RecoveryResult(samples=rows, originals=originals, recovered=rec, summary=summary, cost=dict(inv.cost),
                          settings={"label_mode": label_mode, "estimator": estimator, "config": config.to_dict(),
                                    "seed": seed},
                          lpips_reason=lp_reason, kind=targets.kind, feature_names=list(targets.feature_names))


# --------------------------------------------------------------------------- the full pipeline

def _in_precision(model: nn.Module, precision: str) -> nn.Module:
    m = copy.deepcopy(model)
    return m.double() if precision == "float64" else m.float()


def recovery_model_for(dataset: str) -> str:
    """The feature-recovery attack's default architecture for ``dataset``: ``convnet-spatial`` or ``mlp``."""
    return default_model_for(load_dataset(dataset, "train").kind, attack="recovery")


@dataclass
class UnlearningCase:
    """What the developer produced: M, M_u and the sets involved (for attacks and labs)."""

    pretrained: nn.Module
    original: nn.Module
    unlearned: nn.Module
    train_set: Dataset
    forget: Dataset
    forget_indices: list[int]
    settings: dict


def make_unlearning_case(dataset: str = "mnist-5k", model: str | None = None, *, unlearning: str = "approximate",
                         num_forget: int = 1, train_size: int | None = None, epochs: int | None = None,
                         momentum: float = 0.0, profile: str | None = None, seed: int = 0,
                         pipeline_seed: int = 0, precision: str = "auto", setup=None,
                         forget: list[int] | None = None, progress: bool = False) -> UnlearningCase:
    """The developer's side: fine-tune M0 on the training set into M, then unlearn samples.

    Parameters
    ----------
    model:
        Architecture; default ``convnet-spatial`` for images (see :mod:`course_lib.models`) and
        ``mlp`` for tables. Ignored when ``setup`` is given.
    train_size:
        ``None`` uses the whole private split Du; a number uses that many samples of Du (chosen by
        ``seed``) as the training set (the paper's Figs. 5-6 use 4, 8, 16).
    epochs:
        Fine-tuning epochs m (default: the profile's); exact unlearning retrains with the same.
    momentum:
        SGD momentum of fine-tuning (and retraining); the paper uses plain SGD (0).
    setup:
        A prepared :class:`~course_lib.train.Pipeline` to reuse (else the cached one is loaded).
    forget:
        Positions *in the training set* of the samples to remove (default: ``num_forget`` chosen
        by ``seed``); Table 2 of the paper removes each of the 8 samples of one training set in turn.
    precision:
        ``"float64"``, ``"float32"`` or ``"auto"``: float64 for approximate unlearning and for
        training sets of at most one batch (where float32 rounding would hide the removed
        sample's tiny step), float32 for exact unlearning of larger sets (where retraining's
        reshuffled batches dwarf rounding, and double-precision retraining is slow on a CPU).

    With the whole of Du, the profile's epochs and no momentum, M is the pipeline's cached
    deployed model (cast to the chosen precision) instead of a new fine-tuning run.

    Chapter 2's lab and :func:`run_recovery` call this.
    """
    check_choice(unlearning, UNLEARNING_METHODS, "unlearning method")
    check_choice(precision, PRECISIONS, "precision")
    if setup is None and model is None:
        model = recovery_model_for(dataset)
    pipe = setup or prepare_pipeline(dataset, model, profile=profile, seed=pipeline_seed, progress=progress)
    prof = pipe.profile
    epochs = pipe.finetune_epochs if epochs is None else int(epochs)
    if epochs < 1:
        raise CourseError(f"epochs must be at least 1; got {epochs}.")
    du = pipe.private
    if train_size is None:
        train_idx = torch.arange(len(du))
    else:
        if train_size < 2 or train_size > len(du):
            raise CourseError(f"train_size must lie in 2..{len(du)} (the private split Du has {len(du)} samples); "
                              f"got {train_size}.")
        train_idx = sample_indices(du, int(train_size), seed=seed).sort().values
    train = du.subset(train_idx)
    if forget is not None:
        num_forget = len(forget)
        if num_forget == 0 or min(forget) < 0 or max(forget) >= len(train):
            raise CourseError(f"forget positions must lie in 0..{len(train) - 1}; got {list(forget)}.")
    if num_forget < 1 or num_forget >= len(train):
        raise CourseError(f"num_forget must lie in 1..{len(train) - 1} for a training set of {len(train)} "
                          f"samples; got {num_forget}.")
    if forget is not None:
        forget_local = torch.as_tensor(sorted(set(int(f) for f in forget)), dtype=torch.long)
    else:
        forget_local = sample_indices(train, int(num_forget), seed=seed + 1000).sort().values
    lr, batch = prof.finetune_lr, prof.finetune_batch_size
    if precision == "auto":
        precision = "float64" if unlearning == "approximate" or len(train) <= batch else "float32"
    train_p = train.astype(torch.float64 if precision == "float64" else torch.float32)
    m0 = _in_precision(pipe.pretrained, precision)
    if train_size is None and epochs == pipe.finetune_epochs and momentum == 0.0:
        original = _in_precision(pipe.deployed, precision)  # the cached M, trained exactly like this
    else:
        original = finetune(copy.deepcopy(m0), train_p, epochs=epochs, lr=lr, batch_size=batch, momentum=momentum,
                            seed=pipe.seed, progress=False, desc="fine-tune M")
    forget = train_p.subset(forget_local)
    if unlearning == "approximate":
        # eq. (13)'s b: a training set smaller than the batch was one batch of len(train) samples
        unlearned = approximate_unlearning(m0, original, forget, lr=lr, epochs=epochs,
                                           batch_size=effective_batch_size(len(train), batch))
    else:
        unlearned = exact_unlearning(m0, train_p.without(forget_local), epochs=epochs, lr=lr, batch_size=batch,
                                     momentum=momentum, seed=pipe.seed)
    settings = {"dataset": pipe.dataset, "model": pipe.model_name, "unlearning": unlearning,
                "num_forget": int(num_forget), "train_size": len(train), "epochs": epochs,
                "momentum": momentum, "profile": prof.name, "seed": seed, "pipeline_seed": pipe.seed,
                "precision": precision}
    return UnlearningCase(m0, original, unlearned, train, train.subset(forget_local),
                          train_idx[forget_local].tolist(), settings)


def objective_audit(case: UnlearningCase, recovered: torch.Tensor, *,
                    config: InversionConfig | None = None) -> list[dict]:
    """Is a poor recovery the search's fault or the objective's? Score the truth and the recovery.

    The attacker minimises the loss of eq. (4) at M (theta) and ranks its restarts by it, with the
    TV weight it ends on (``config.final_tv_weight``). This scores two candidates with that loss --
    the removed samples themselves (which the attacker never sees) and ``recovered`` ``(K, ...)``
    -- at two models:

    * ``"M"``, the model the attack takes its dummy gradient at (eq. 3);
    * ``"M0"``, the pre-trained model at which the developer computed the approximate update
      (eq. 13), so the estimate theta - theta_u is exactly M0's gradient of the removed samples.

    If the truth scores lower than the recovery, a better search would find it; if it scores
    higher, the objective itself prefers the recovery and no budget will fix that. Returns one
    dict per (model, candidate) with ``cosine_loss``, ``tv_term``, ``total`` (see
    :func:`~course_lib.attacks.inversion.attack_loss_terms`) and the recovery's mean PSNR (images)
    or RMSE (tables) against the removed samples (``None`` for the removed samples themselves).
    ``recovered`` must be paired with ``case.forget`` (``RecoveryResult.recovered`` is). Chapter 3
    calls this.
    """
    config = config or InversionConfig.for_profile(case.settings["profile"])
    truth = case.forget.x.detach().float().cpu()
    recovered = torch.as_tensor(recovered).detach().float().cpu()
    if tuple(recovered.shape) != tuple(truth.shape):
        raise CourseError(f"recovered has shape {tuple(recovered.shape)} but the removed samples have "
                          f"{tuple(truth.shape)}; pass RecoveryResult.recovered of this case.")
    estimate = estimate_gradient(case.original, case.unlearned)
    image = case.forget.kind == "image"
    rows = []
    for model_name, model in (("M", case.original), ("M0", case.pretrained)):
        for candidate, x in (("removed sample", truth), ("recovery", recovered)):
            terms = attack_loss_terms(model, estimate, x, case.forget.y, num_classes=case.forget.num_classes,
                                      tv_weight=config.final_tv_weight)
            score = None if x is truth else finite_mean(M.psnr(truth, x) if image else M.rmse(truth, x))
            rows.append({"model": model_name, "candidate": candidate, **terms, ("psnr" if image else "rmse"): score})
    return rows


@recipe("recovery", chapter="3", command="course-lib recover")
def run_recovery(dataset: str = "mnist-5k", model: str | None = None, *, unlearning: str = "approximate",
                 num_forget: int = 1, train_size: int | None = None, epochs: int | None = None,
                 label: str = "known", restarts: int | None = None, iterations: int | None = None,
                 profile: str | None = None, seed: int = 0, precision: str = "auto",
                 pipeline_seed: int = 0, setup=None, config: InversionConfig | None = None,
                 estimator: str = "difference", forget: list[int] | None = None, progress: bool = True,
                 **config_overrides) -> RecoveryResult:
    """Unlearn ``num_forget`` samples and recover them from (M, M_u): Section 3.2.1 end to end.

    ``restarts``/``iterations`` (and any other :class:`InversionConfig` field given as a keyword)
    override the profile's budget. ``estimator`` is ``"difference"`` (eq. 2, default) or
    ``"reference"`` (the attacker also knows M0 and the training-set size). The result's ``samples[i]["index"]`` is the row of the removed
    sample in the private split Du. Used by chapter 3 and ``course-lib recover``.
    """
    check_choice(label, LABEL_MODES, "label mode")
    case = make_unlearning_case(dataset, model, unlearning=unlearning, num_forget=num_forget,
                                train_size=train_size, epochs=epochs, profile=profile, seed=seed,
                                pipeline_seed=pipeline_seed, precision=precision, setup=setup,
                                forget=forget, progress=progress)
    if config is None:
        config = InversionConfig.for_profile(case.settings["profile"], restarts=restarts, iterations=iterations,
                                             progress=progress, **config_overrides)
    result = attack_unlearned_model(case.original, case.unlearned, case.forget, label_mode=label, config=config,
                                    seed=seed, reference=case.pretrained, estimator=estimator,
                                    pretrained=case.pretrained, train_size=len(case.train_set))
    for row, idx in zip(result.samples, case.forget_indices):
        row["index"] = int(idx)
    kind = case.train_set.kind
    if kind == "image":
        base = M.baseline_mean_image_psnr(case.train_set.x, case.forget.x)
        result.summary["baseline_mean_image_psnr"] = finite_mean(base)
    result.settings = {**case.settings, **result.settings, "label_mode": label}
    return result


__all__ = ["RecoveryResult", "attack_unlearned_model", "run_recovery", "objective_audit", "make_unlearning_case", "UnlearningCase",
           "score_recovery", "recovery_model_for", "UNLEARNING_METHODS", "LABEL_MODES", "PRECISIONS", "ESTIMATORS"]
