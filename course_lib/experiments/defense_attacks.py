"""Chapter 6's two evaluations: feature recovery and label inference against every defended model.

:func:`recovery_under_defenses` (the server, white-box, chapter 3's attack) and
:func:`labels_under_defenses` (a user, black-box, chapter 4's two attacks) each return their rows;
:func:`course_lib.experiments.defense_evaluation.run_defenses` assembles them into a
:class:`~course_lib.experiments.defense_result.DefensesResult`.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from .. import defenses as D
from ..attacks.blackbox import RecordedAPI
from ..attacks.inversion import InversionConfig
from ..data import Dataset, sample_indices
from ..errors import CourseError
from ..metrics import baseline_mean_image_psnr, finite_mean
from ..models import flatten
from ..train import prepare_pipeline
from ..unlearn.paper import approximate_step, approximate_unlearning, exact_unlearning
from .defense_result import NO_DEFENSE


def _update_cosine(original, unlearned, defended) -> float:
    """cos(theta_d - theta, theta_u - theta): how much of the true update the released model still shows."""
    true = flatten(D.unlearning_update(original, unlearned))
    seen = flatten(D.unlearning_update(original, defended))
    denom = float(true.norm() * seen.norm())
    return float(true @ seen) / denom if denom > 0 else 0.0


def _ratio(released, base_accuracy: float, validation: Dataset) -> float:
    """:func:`course_lib.defenses.accuracy_ratio` with the undefended accuracy computed once."""
    if not base_accuracy > 0:
        raise CourseError("The undefended unlearned model has zero validation accuracy; the ratio is undefined.")
    return D.validation_accuracy(released, validation) / base_accuracy


def _validation(test: Dataset, cfg, seed: int) -> Dataset:
    if cfg.validation_size is None or cfg.validation_size >= len(test):
        return test
    return test.subset(sample_indices(test, cfg.validation_size, seed=seed + 777).sort().values)


def _finetune_data(pipe, cfg, seed: int) -> Dataset:
    """The fine-tuning defense's additional samples: ``finetune_samples`` of the public split D0."""
    n = min(cfg.finetune_samples, len(pipe.public))
    return pipe.public.subset(sample_indices(pipe.public, n, seed=seed + 4242))


def _defense_options(name: str, cfg, ft_data: Dataset, pipe) -> dict:
    if name == "finetune":
        return {"data": ft_data, "epochs": cfg.finetune_epochs, "batch_size": cfg.finetune_batch_size}
    if name == "pruning":
        return {"space": cfg.pruning_space}
    if name == "obfuscation":
        return {"clip_norm": cfg.clip_norm, "space": cfg.obfuscation_space, "noise": cfg.noise_reading,
                "step_scale": approximate_step(pipe)}
    return {}


def recovery_row_id(row: dict) -> tuple:
    """What makes a recovery row unique: (defense, strength, removed sample)."""
    return (row["defense"], float(row["strength"]), int(row["sample"]))


def recovery_under_defenses(dataset: str, settings: list[tuple[str, float]], cfg, inv_cfg: InversionConfig,
                            profile: str, seed: int, progress: bool, store=None) -> dict:
    """Feature recovery (chapter 3's attack) against every (defense, strength) and the undefended baseline.

    ``store`` (a :class:`~course_lib.results.RowStore` of this configuration, or ``None``) receives
    each row, with its recovered image, as soon as it is computed; rows it already holds are read,
    not computed again, and a removed sample whose rows are all there is not even unlearned.

    Returns ``{"rows", "originals", "images", "settings", "cost"}`` for :class:`DefensesResult`.
    """
    from .recovery import attack_unlearned_model, make_unlearning_case, recovery_model_for

    # chapter 3's attack model (convnet-spatial for images), so the undefended attack really recovers
    pipe = prepare_pipeline(dataset, recovery_model_for(dataset), profile=profile, seed=0, progress=progress)
    if pipe.public.kind != "image":
        raise CourseError(f"Chapter 6's feature-recovery evaluation needs images; {dataset!r} is tabular.")
    # the developer's M (float64, as chapter 3: float32 rounds part of the tiny update away) and M0
    case = make_unlearning_case(dataset, unlearning=cfg.unlearning, num_forget=1, profile=profile, seed=seed,
                                setup=pipe, precision="float64")
    original, m0 = case.original, case.pretrained
    train = case.train_set.astype(torch.float64)
    prof = pipe.profile
    if cfg.samples >= len(train):
        raise CourseError(f"samples must be below the training-set size {len(train)}; got {cfg.samples}.")
    chosen = sample_indices(train, cfg.samples, seed=seed + 1000).tolist()
    ft_data = _finetune_data(pipe, cfg, seed)
    validation = _validation(pipe.test, cfg, seed)
    all_settings = [(NO_DEFENSE, 0.0)] + [(d, float(s)) for d, s in settings]
    found = {recovery_row_id(r): r for r in (store.rows if store is not None else [])}
    originals, rows, settings_out = [], [], {}
    todo = sum(1 for idx in chosen for d, s in all_settings if (d, s, int(idx)) not in found)
    bar = tqdm(total=todo, desc="defend + recover", disable=not progress or todo == 0, leave=False)
    inversions, seconds_inv = 0, 0.0
    for i, idx in enumerate(chosen):
        forget = train.subset([idx])
        originals.append(forget.x[0].float())
        missing = [(d, s) for d, s in all_settings if (d, s, int(idx)) not in found]
        if missing:
            if cfg.unlearning == "approximate":
                unlearned = approximate_unlearning(m0, original, forget, lr=prof.finetune_lr,
                                                   epochs=case.settings["epochs"], batch_size=prof.finetune_batch_size)
            else:
                unlearned = exact_unlearning(m0, train.without([idx]), epochs=case.settings["epochs"],
                                             lr=prof.finetune_lr, batch_size=prof.finetune_batch_size, seed=pipe.seed)
            base_acc = D.validation_accuracy(unlearned, validation)
        for defense, strength in missing:
            if defense == NO_DEFENSE:
                released = unlearned
            else:
                released = D.apply_defense(defense, original, unlearned, strength, seed=seed + i,
                                           **_defense_options(defense, cfg, ft_data, pipe))
            rec = attack_unlearned_model(original, released, forget, label_mode="known", config=inv_cfg,
                                         seed=seed + i)
            inversions += 1
            seconds_inv += float(rec.cost.get("seconds", 0.0))
            row = rec.samples[0]
            found[(defense, strength, int(idx))] = new = {
                "defense": defense, "strength": strength, "sample": int(idx), "label": int(forget.y[0]),
                "psnr": row["psnr"], "ssim": row["ssim"], "lpips": row["lpips"], "rmse": row["rmse"],
                "accuracy_ratio": 1.0 if defense == NO_DEFENSE else _ratio(released, base_acc, validation),
                "update_cosine": 1.0 if defense == NO_DEFENSE else _update_cosine(original, unlearned, released),
                "attack_cosine": rec.summary.get("attack_cosine"), "seconds": float(rec.cost.get("seconds", 0.0)),
                "clipping_binds": (D.clipping_binds(original, unlearned, cfg.clip_norm, step_scale=approximate_step(pipe))
                                   if defense == "obfuscation" and cfg.obfuscation_space == "gradient" else
                                   D.clipping_binds(original, unlearned, cfg.clip_norm) if defense == "obfuscation"
                                   else None),
                "lpips_reason": rec.lpips_reason or None,
                "recovered": rec.recovered[0].float().tolist()}
            if store is not None:
                store.append(new)
            bar.update(1)
    bar.close()
    images = {}
    for defense, strength in all_settings:
        picked = [found[(defense, strength, int(idx))] for idx in chosen]
        images[(defense, strength)] = torch.stack([torch.tensor(r["recovered"], dtype=torch.float32) for r in picked])
        rows += [{k: v for k, v in r.items() if k not in ("recovered", "lpips_reason")} for r in picked]
        reasons = [r["lpips_reason"] for r in picked if r.get("lpips_reason")]
        if reasons:
            settings_out["lpips_reason"] = reasons[0]
    rows.sort(key=lambda r: chosen.index(r["sample"]))  # sample by sample, each in the settings' order
    originals_t = torch.stack(originals)
    settings_out.update({"mean_image_psnr": finite_mean(baseline_mean_image_psnr(train.x.float(), originals_t)),
                         "removed_samples": [int(i) for i in chosen], "unlearning": cfg.unlearning,
                         "precision": "float64", "deployed_test_accuracy": pipe.metrics.get("deployed_test_accuracy")})
    return {"rows": rows, "originals": originals_t, "images": images, "settings": settings_out,
            "cost": {"inversions": inversions, "inversion_seconds": round(seconds_inv, 2),
                     "recovery_rows_read": len(rows) - inversions, "recovery_rows_computed": inversions,
                     "inversion_budget": {"restarts": inv_cfg.restarts, "iterations": inv_cfg.iterations}},
            "results_path": str(store.path) if store is not None else None}


def _one_hot_scores(label_o: torch.Tensor, label_u: torch.Tensor, target: torch.Tensor, k: int) -> torch.Tensor:
    """beta (eq. 10) that the probability attack computes when all it gets is labels (as one-hot vectors)."""
    from ..attacks.unlearned_label import confidence_drop

    delta = confidence_drop(F.one_hot(label_o, k).double(), F.one_hot(label_u, k).double(), target, k)
    return torch.diagonal(delta).clone()


def labels_under_defenses(dataset: str, settings: list[tuple[str, float]], cfg, profile: str, seed: int,
                          progress: bool) -> dict:
    """Label inference (chapter 4's two attacks) against every (defense, strength) and the baseline.

    Returns ``{"rows", "settings", "cost"}`` for :class:`DefensesResult`.
    """
    from ..attacks.label_only import probe_unlearned_labels
    from ..attacks.unlearned_label import probe_unlearned, top_k_classes
    from .label_inference import LabelInferenceConfig
    from .probing_setup import prepare_probing

    lcfg = LabelInferenceConfig.for_profile(profile)
    setup = prepare_probing(dataset, profile=profile, seed=cfg.label_seed, subset_per_class=lcfg.subset_per_class,
                            progress=progress)
    k = setup.num_classes
    probes = setup.probes(cfg.probes_per_class, lcfg.probe_method, progress=progress)
    boundary = setup.boundary_probes(progress=progress) if cfg.label_only_attack else None
    ft_data = _finetune_data(setup.pipeline, cfg, seed)
    validation = _validation(setup.pipeline.test, cfg, seed)
    all_settings = [(NO_DEFENSE, 0.0)] + settings
    # M's answers, recorded once: M is no longer served after unlearning (RecordedAPI)
    original_probs = RecordedAPI(setup.api(name="original"), probes.x)
    original_labels = RecordedAPI(setup.api(output="labels", name="original"), probes.x)
    boundary_labels = (RecordedAPI(setup.api(output="labels", name="original"), boundary.x)
                       if boundary is not None else None)
    rows = []
    found = {(d, s, a): [] for d, s in all_settings for a in ("probs", "labels")}
    informative = {key: 0 for key in found}
    ratios = {(d, s): [] for d, s in all_settings}
    queries = {"probs": 0, "labels": 0}
    classes = list(range(k if cfg.label_classes is None else min(k, cfg.label_classes)))
    bar = tqdm(total=len(classes) * len(all_settings), desc="defend + infer label", disable=not progress, leave=False)
    for c in classes:
        unlearned = setup.unlearn([c], cfg.label_forget_share, cfg.unlearning)
        base_acc = D.validation_accuracy(unlearned, validation)
        for defense, strength in all_settings:
            if defense == NO_DEFENSE:
                released, api_kind = unlearned, "probs"
            else:
                released = D.apply_defense(defense, setup.deployed, unlearned, strength, seed=seed + c,
                                           **_defense_options(defense, cfg, ft_data, setup.pipeline))
                api_kind = D.get_defense(defense).api if strength == 1.0 else "probs"  # label-only at 0 is off
            ratios[(defense, strength)].append(
                1.0 if defense == NO_DEFENSE else _ratio(released, base_acc, validation))
            # the probability attack (chapter 4, eqs. 9-11)
            if api_kind == "probs":
                res = probe_unlearned(original_probs, setup.api(released, name="released"), probes)
                beta, inferred = res.beta, res.inferred[0]
                queries["probs"] += sum(res.queries.values())
            else:  # label-only answers: the same equations see one-hot vectors
                api_u = setup.api(released, output="labels", name="released")
                lab_o = original_labels.query(probes.x)
                lab_u = api_u.query(probes.x)
                queries["probs"] += len(probes.x)
                beta = _one_hot_scores(lab_o, lab_u, probes.target, k)
                inferred = top_k_classes(beta, 1)[0]
            found[(defense, strength, "probs")].append(int(inferred))
            informative[(defense, strength, "probs")] += int(bool((beta != 0).any()))
            # the label-only attack (chapter 4, beyond the paper): works whatever the API answers
            if boundary is not None:
                res = probe_unlearned_labels(boundary_labels,
                                             setup.api(released, output="labels", name="released"), boundary)
                found[(defense, strength, "labels")].append(int(res.inferred[0]))
                informative[(defense, strength, "labels")] += int(bool((res.flip_share != 0).any()))
                queries["labels"] += sum(res.queries.values())
            bar.update(1)
    bar.close()
    for defense, strength in all_settings:
        for attack in ("probs", "labels"):
            inferred = found[(defense, strength, attack)]
            if not inferred:
                continue
            rows.append({"defense": defense, "strength": float(strength), "attack": attack,
                                  "inferred": inferred,
                                  "accuracy": float(np.mean([i == c for c, i in enumerate(inferred)])),
                                  "informative": informative[(defense, strength, attack)],
                                  "accuracy_ratio": finite_mean(ratios[(defense, strength)])})
    queries["original_recorded"] = sum(api.recorded_queries for api in (original_probs, original_labels, boundary_labels)
                                       if api is not None)
    cost = {"probe_construction_queries": int(probes.queries.sum()),
            "probes_from_cache": bool(getattr(probes, "from_cache", False)), "probing_queries": queries,
            "boundary_probes": None if boundary is None else boundary.summary()}
    settings_out = {"num_classes": k, "label_forget_share": cfg.label_forget_share, "label_classes": classes,
                    "validation_size": len(validation), "label_seed": cfg.label_seed,
                    "probes_per_class": cfg.probes_per_class, "probe_method": lcfg.probe_method,
                    "subset_per_class": lcfg.subset_per_class}
    return {"rows": rows, "settings": settings_out, "cost": cost}


def signal_table(pipe, cfg, *, seed: int = 0, extra_grids: dict | None = None, utility_grids=None):
    """How big the signal is against each defense's perturbation, before any attack (chapter 6).

    For the removed samples that :func:`recovery_under_defenses` would choose (``cfg.samples`` of
    them, by ``seed``), approximate unlearning of each one, then every (defense, strength) of
    ``cfg``'s grid (and of each config in ``extra_grids``, ``{name: DefenseConfig}``): the cosine
    between the released difference theta_d - theta and the true update, whether clipping binds
    (obfuscation), the accuracy ratio, and the norms of the removed sample's gradient and update.
    ``utility_grids``: the names of the grids whose accuracy ratio is measured (``None``: all; the
    others get NaN, e.g. when :func:`run_defenses` measures it anyway).
    Returns a pandas DataFrame, one row per (grid, defense, strength, sample).
    """
    import pandas as pd

    from .recovery import make_unlearning_case

    case = make_unlearning_case(setup=pipe, unlearning="approximate", num_forget=1, seed=seed, precision="float64")
    original, m0, prof = case.original, case.pretrained, pipe.profile
    train = case.train_set.astype(torch.float64)
    chosen = sample_indices(train, cfg.samples, seed=seed + 1000).tolist()
    ft_data = _finetune_data(pipe, cfg, seed)
    validation = _validation(pipe.test, cfg, seed)
    step = approximate_step(pipe)
    grids = {"course": cfg, **(extra_grids or {})}
    rows = []
    for i, idx in enumerate(chosen):
        forget = train.subset([idx])
        unlearned = approximate_unlearning(m0, original, forget, lr=prof.finetune_lr, epochs=case.settings["epochs"],
                                           batch_size=prof.finetune_batch_size)
        u_norm = float(flatten(D.unlearning_update(original, unlearned)).norm())
        base_acc = D.validation_accuracy(unlearned, validation)
        for grid_name, grid_cfg in grids.items():
            for defense, strengths in grid_cfg.grid().items():
                for strength in strengths:
                    released = D.apply_defense(defense, original, unlearned, strength, seed=seed + i,
                                               **_defense_options(defense, grid_cfg, ft_data, pipe))
                    binds = (D.clipping_binds(original, unlearned, grid_cfg.clip_norm, step_scale=step)
                             if defense == "obfuscation" else None)
                    rows.append({"grid": grid_name, "defense": defense, "value": float(strength), "sample": int(idx),
                                 "label": int(forget.y[0]), "||g||": u_norm / step, "||u||": u_norm,
                                 "cosine(released, true update)": _update_cosine(original, unlearned, released),
                                 "clipping binds": binds,
                                 "accuracy ratio": (_ratio(released, base_acc, validation)
                                                    if utility_grids is None or grid_name in utility_grids else float("nan"))})
    return pd.DataFrame(rows)
