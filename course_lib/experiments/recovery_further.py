"""Chapter 3's further studies: several samples at once, the gradient shares, the objective audit, the ablation.

Recipes (each returns a :class:`~course_lib.experiments.recovery_studies.RecoveryStudyResult`)
-----------------------------------------------------------------------------------------------
``run_recovery_multi``     K samples removed together, recovered jointly (Figs. 8, 18-20)
``run_gradient_shares``    how much of the removed samples' summed gradient each one carries, and
                           what one dummy recovers from it
``run_objective_audit``    is a poor recovery the search's fault or the objective's?
``run_recovery_ablation``  the paper's attack, then the course's additions switched on one by one

Sized by :class:`~course_lib.experiments.recovery_studies.RecoveryStudiesBudget`; chapter 3 runs
the first, chapter 3b ("going further") the others.
"""
from __future__ import annotations

import dataclasses

import torch

from .. import metrics as M
from ..attacks.gradient_estimation import estimate_gradient, gradient_shares
from ..attacks.inversion import ADDITIONS, InversionConfig, invert_gradient
from ..errors import CourseError, check_choice
from ..metrics import finite_mean, finite_median
from ..recipes import recipe
from .recovery import LABEL_MODES, make_unlearning_case, objective_audit
from .recovery_studies import (PRESETS, RecoveryStudiesBudget, RecoveryStudyResult, _settings, attack_case,
                               study_setup)


@recipe("recovery-multi", chapter="3", command="course-lib recovery-study multi")
def run_recovery_multi(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                       seed: int = 0, preset: str = "course", budget: RecoveryStudiesBudget | None = None,
                       precision: str = "auto", setup=None, progress: bool = False) -> RecoveryStudyResult:
    """K samples removed at once by approximate unlearning and recovered jointly, for K in ``budget.multi``.

    The K recoveries are paired with the removed samples by the Hungarian method
    (:func:`course_lib.metrics.match_samples`). One row per removed sample: ``removed`` (K),
    ``index``, ``label``, ``psnr``, ``ssim``, ``rmse``, ``gradient_share`` (its share of the summed
    gradient at M0, :func:`~course_lib.attacks.gradient_estimation.gradient_shares`);
    ``summary["per_k"]``: mean / median PSNR, how many reached 20 dB, the mean-image baseline.
    The figure shows the smallest K.
    """
    check_choice(preset, PRESETS, "inversion preset")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    config = budget.inversion(pipe.profile.name, preset)
    rows, per_k, shown = [], [], None
    for k in budget.multi:
        case = make_unlearning_case(setup=pipe, unlearning="approximate", num_forget=int(k), seed=seed,
                                    precision=precision)
        res = attack_case(case, config, seed=seed)
        shares = gradient_shares(case.pretrained, case.forget)
        share_of = {int(i): float(s) for i, s in zip(case.forget_indices, shares)}
        for s in res.samples:
            rows.append({"removed": int(k), "index": s["index"], "label": s["label"], "psnr": s["psnr"],
                         "ssim": s["ssim"], "rmse": s["rmse"], "gradient_share": share_of[s["index"]]})
        per_k.append({"removed": int(k), "mean_psnr": res.summary["mean_psnr"], "median_psnr": res.summary["median_psnr"],
                      "at_least_20_db": res.summary["recovered_at_20db"],
                      "baseline_psnr": res.summary["baseline_mean_image_psnr"], "seconds": res.cost["seconds"]})
        if shown is None:
            shown = res
    return RecoveryStudyResult("multi", rows, {"per_k": per_k}, shown.originals[:16],
                               {f"recovered (K = {budget.multi[0]})": shown.recovered[:16]},
                               [f"{s['psnr']:.1f} dB" for s in shown.samples[:16]],
                               _settings("multi", pipe, budget, {preset: config}, seed=seed))


@recipe("gradient-shares", chapter="3b", command="course-lib recovery-study shares")
def run_gradient_shares(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                        seed: int = 0, removed: int | None = None, one_dummy: bool = True,
                        budget: RecoveryStudiesBudget | None = None, precision: str = "auto", setup=None,
                        progress: bool = False) -> RecoveryStudyResult:
    """Which of K removed samples the estimate actually contains, over ``budget.share_seeds`` seeds.

    For each seed, K = ``removed`` (default: the budget's smallest ``multi``) samples are removed by
    approximate unlearning; each one's share of their summed gradient at M0 is
    ``<g_i, G> / ||G||^2`` (the shares add up to 1), beside its loss at M0. With ``one_dummy``, the
    first seed's estimate is also attacked with a single dummy whose label is read from the last
    layer (unknown-label mode), and the dummy is compared with every removed sample.
    """
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    k = int(removed or budget.multi[0])
    if k < 2:
        raise CourseError(f"The shares study removes several samples at once; removed must be >= 2, got {k}.")
    rows, summary, originals, images, titles = [], {"per_seed": []}, None, {}, []
    config = budget.inversion(pipe.profile.name, "course")
    for s in range(budget.share_seeds):
        case = make_unlearning_case(setup=pipe, unlearning="approximate", num_forget=k, seed=seed + s,
                                    precision=precision)
        shares = gradient_shares(case.pretrained, case.forget)
        with torch.no_grad():
            m0 = case.pretrained.eval()
            logits = m0(case.forget.x.to(next(m0.parameters()).dtype))
            losses = torch.nn.functional.cross_entropy(logits, case.forget.y, reduction="none")
        for j, idx in enumerate(case.forget_indices):
            rows.append({"seed": seed + s, "index": int(idx), "label": int(case.forget.y[j]),
                         "gradient_share": float(shares[j]), "loss_at_m0": float(losses[j]),
                         "m0_prediction": int(logits[j].argmax())})
        top = sorted((float(v) for v in shares), reverse=True)
        summary["per_seed"].append({"seed": seed + s, "largest_share": top[0], "two_largest": top[0] + top[1],
                                    "shares_at_least_1pct": sum(v >= 0.01 for v in top)})
        if one_dummy and s == 0:
            estimate = estimate_gradient(case.original, case.unlearned)
            one = invert_gradient(case.original, estimate, input_shape=case.forget.input_shape,
                                  num_classes=case.forget.num_classes, num_forget=1, labels=None, config=config,
                                  seed=seed)
            vs_each = M.psnr(case.forget.x.float(), one.images.expand_as(case.forget.x).float())
            closest = max(range(k), key=lambda j: vs_each[j])
            summary["one_dummy"] = {"seed": seed, "label_read": int(one.labels.item()),
                                    "closest_index": int(case.forget_indices[closest]),
                                    "closest_label": int(case.forget.y[closest]),
                                    "closest_share": float(shares[closest]), "psnr_to_closest": float(vs_each[closest]),
                                    "psnr_to_each": [float(v) for v in vs_each]}
            originals = case.forget.x[[closest]].float()
            images = {"one dummy": one.images.float()}
            titles = [f"index {int(case.forget_indices[closest])}"]
    summary["removed"] = k
    return RecoveryStudyResult("shares", rows, summary, originals, images, titles,
                               _settings("shares", pipe, budget, {"course": config}, seed=seed))


@recipe("objective-audit", chapter="3b", command="course-lib recovery-study audit")
def run_objective_audit(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                        seed: int = 0, preset: str = "course", budget: RecoveryStudiesBudget | None = None,
                        precision: str = "auto", setup=None, progress: bool = False) -> RecoveryStudyResult:
    """Score the removed sample itself with the attack's own loss, at M and at M0, beside the recovery.

    For ``budget.audit_seeds`` seeds, approximate unlearning of one sample, the attack under
    ``preset``, then :func:`~course_lib.experiments.recovery.objective_audit`. One row per (seed,
    model, candidate) with ``cosine_loss``, ``tv_term``, ``total`` and the recovery's ``psnr``;
    ``summary[model]``: on how many seeds the removed sample scores lower than the recovery (in
    total, and on the cosine term alone). Lower truth: the search is to blame; higher: the objective.
    """
    check_choice(preset, PRESETS, "inversion preset")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    config = budget.inversion(pipe.profile.name, preset)
    rows, originals, recovered = [], [], []
    for s in range(budget.audit_seeds):
        case = make_unlearning_case(setup=pipe, unlearning="approximate", seed=seed + s, precision=precision)
        res = attack_case(case, config, seed=seed + s)
        rows += [{"seed": seed + s, **r} for r in objective_audit(case, res.recovered, config=config)]
        originals.append(res.originals[0])
        recovered.append(res.recovered[0])
    summary = {}
    for model_name in ("M", "M0"):
        truth_lower = cos_lower = 0
        for s in range(budget.audit_seeds):
            pick = {r["candidate"]: r for r in rows if r["seed"] == seed + s and r["model"] == model_name}
            truth_lower += pick["removed sample"]["total"] < pick["recovery"]["total"]
            cos_lower += pick["removed sample"]["cosine_loss"] < pick["recovery"]["cosine_loss"]
        summary[model_name] = {"truth_lower_total": int(truth_lower), "truth_lower_cosine": int(cos_lower),
                               "seeds": budget.audit_seeds}
    summary["tv_share_of_truth_loss_at_M"] = finite_median(
        [r["tv_term"] / r["total"] for r in rows if r["model"] == "M" and r["candidate"] == "removed sample" and r["total"] > 0])
    return RecoveryStudyResult("audit", rows, summary, torch.stack(originals), {f"recovered ({preset})": torch.stack(recovered)},
                               [f"seed {seed + s}" for s in range(budget.audit_seeds)],
                               _settings("audit", pipe, budget, {preset: config}, seed=seed))


def ablation_steps(profile=None, budget: RecoveryStudiesBudget | None = None) -> list[tuple[str, InversionConfig]]:
    """The ablation's rows: ``("paper", paper preset)``, then ``("+ <addition>", ...)`` cumulatively.

    The last step has every addition of :data:`~course_lib.attacks.inversion.ADDITIONS` on, which
    is the course's default (checked: a mismatch raises, so a new addition cannot be left out).
    """
    budget = budget or RecoveryStudiesBudget.for_profile(profile)
    course = budget.inversion(profile, "course")
    config = budget.inversion(profile, "paper")
    steps = [("paper", config)]
    for name, settings in ADDITIONS.items():
        config = dataclasses.replace(config, **{k: getattr(course, k) if v is None else v for k, v in settings.items()})
        steps.append((f"+ {name}", config.validated()))
    if config != course:
        diff = sorted(f.name for f in dataclasses.fields(course) if getattr(config, f.name) != getattr(course, f.name))
        raise CourseError(f"The additions switched on one by one do not give the course's default (differ in {diff}); "
                          "every difference from the paper preset must be a named addition.")
    return steps


@recipe("recovery-ablation", chapter="3b", command="course-lib recovery-study ablation")
def run_recovery_ablation(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                          seed: int = 0, unlearning: str = "approximate", label: str = "known",
                          budget: RecoveryStudiesBudget | None = None, precision: str = "auto", setup=None,
                          progress: bool = False) -> RecoveryStudyResult:
    """The paper's attack, then each course addition switched on in turn, to the course's default.

    For ``budget.ablation_seeds`` seeds (one removed sample each, the same unlearned model and
    random starts for every row), one attack per step of :func:`ablation_steps`. An addition that
    cannot act in this setting (analytic labels when the labels are known) is reported with
    ``applies=False`` and the previous step's numbers, not run again. ``summary``: per step the
    median and mean PSNR, the gain of the median over the previous step and the seconds.
    """
    check_choice(unlearning, ("approximate", "exact"), "unlearning method")
    check_choice(label, LABEL_MODES, "label mode")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision, label)
    steps = ablation_steps(pipe.profile.name, budget)
    rows, originals, images = [], [], {}
    for s in range(budget.ablation_seeds):
        case = make_unlearning_case(setup=pipe, unlearning=unlearning, seed=seed + s, precision=precision)
        previous = None
        for name, config in steps:
            applies = not (name == "+ analytic labels" and label == "known")
            res = attack_case(case, config, seed=seed + s, label=label) if applies or previous is None else previous
            row = res.samples[0]
            rows.append({"step": name, "applies": applies, "seed": seed + s, "index": row["index"],
                         "psnr": row["psnr"], "ssim": row["ssim"], "rmse": row["rmse"],
                         "attack_loss": res.summary["attack_loss"], "seconds": res.cost["seconds"] if applies else 0.0})
            images.setdefault(name, []).append(res.recovered[0])
            previous = res
        originals.append(previous.originals[0])
    per_step, last = [], None
    for name, _ in steps:
        sel = [r for r in rows if r["step"] == name]
        med = finite_median([r["psnr"] for r in sel])
        per_step.append({"step": name, "applies": sel[0]["applies"], "median_psnr": med,
                         "mean_psnr": finite_mean([r["psnr"] for r in sel]),
                         "gain_db": None if last is None else med - last,
                         "seconds": finite_mean([r["seconds"] for r in sel])})
        last = med
    summary = {"steps": per_step, "median_psnr": {p["step"]: p["median_psnr"] for p in per_step},
               "paper_median_psnr": per_step[0]["median_psnr"], "course_median_psnr": per_step[-1]["median_psnr"]}
    shown = [steps[0][0], steps[-1][0]]
    return RecoveryStudyResult("ablation", rows, summary, torch.stack(originals),
                               {("paper" if k == "paper" else "course default"): torch.stack(images[k]) for k in shown},
                               [f"seed {seed + s}" for s in range(budget.ablation_seeds)],
                               _settings("ablation", pipe, budget, dict(steps), seed=seed, unlearning=unlearning,
                                         label=label))


__all__ = ["run_recovery_multi", "run_gradient_shares", "run_objective_audit", "run_recovery_ablation",
           "ablation_steps"]
