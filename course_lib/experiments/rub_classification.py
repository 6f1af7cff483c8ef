"""RUB for classification (chapter 5): unlearn, measure TA / UA / MIA, attack with UMA, repeat over seeds.

The recipe follows Sections 4-5.1 of the RUB paper:

1. **Original model** f: the architecture trained on the *whole* training split (D = D_u U D_r),
   cached under ``data/cache`` keyed by its configuration.
2. **Forget set** D_u: whole classes (class-wise forgetting, RUB's Table 1; default class 0) or a
   random share of the samples (random forgetting). D_r is the rest of the training split.
3. For every unlearning method, every unlearning seed and every attack radius eps, one **row**:
   TA (test accuracy, on the retained classes for class-wise forgetting), RA (retain accuracy, on a
   fixed random choice of at most 500 samples of D_r), UA (raw accuracy on the
   forget samples, lower is better), MIA (share of forget samples a shadow-model attack calls
   members, one value per MIA seed) and SalUn's SVC MIA-efficacy, on the forget samples x (eps = 0)
   or on UMA's x + delta (eps > 0); plus Proposition 4's verdict and the attack's cost.
4. Rows go to a JSONL results file **as soon as they are computed** (each write replaces the file
   atomically), and a second run with the same configuration skips every (method, seed, eps) it
   finds, so an interrupted benchmark resumes without recomputing or duplicating rows.
5. :meth:`RubResult.table` prints Table 1's analogue as mean +- std over seeds (TA, UA) and over
   seeds x MIA seeds (MIA); :meth:`RubResult.plot` draws UA and MIA against eps.

Shadow models for the MIA train on halves of the **test split** (disjoint from the target's
training data; see :mod:`course_lib.attacks.membership`), with the original model's schedule.
"""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_mod
from ..attacks.membership import svc_mia_efficacy
from ..attacks.uma import output_distance, robustness_verdict, unlearning_mapping_attack
from ..cache import cached_unlearning, config_key, source_key
from ..config import results_dir
from ..errors import CourseError
from ..models import MODELS, default_model_for
from ..recipes import recipe
from ..results import RowStore, prepare_output
from ..train import accuracy, predict_proba
from ..unlearn import CLASSIFICATION_METHODS, method_defaults
from .rub_result import RubResult
from .rub_setup import (DEFAULT_EPS, LANDING_METHODS, RUB_METHODS, RubConfig, RubSetup,  # noqa: F401 (re-exported)
                        prepare_rub, validate_request)


# --------------------------------------------------------------------------- results file

def row_id(row: dict) -> tuple:
    """What makes a classification row unique: (method, seed, eps)."""
    return (row["method"], int(row["seed"]), round(float(row["eps"]), 10))


# --------------------------------------------------------------------------- the benchmark

def effective_hyper_parameters(method: str, overrides: dict, setup: "RubSetup") -> dict:
    """The keyword arguments a method runs with: the overrides; ``retrain`` gets the original's
    schedule (epochs, lr, ...) where the overrides do not set it."""
    hp = dict(overrides)
    if method == "retrain":
        for k, v in setup.train_schedule().items():
            hp.setdefault(k, v)
    return hp


def hp_key(method: str, overrides: dict, setup: "RubSetup") -> str:
    """Hash of a method's effective hyper-parameters (its defaults updated by ``overrides``) and of
    its source code, so that rows and cached models of an edited method (a learner's own) are redone."""
    fn = CLASSIFICATION_METHODS.get(method)
    hp = {**method_defaults(fn), **effective_hyper_parameters(method, overrides, setup)}
    hp.pop("seed", None)
    return config_key({"method": method, "source": source_key(fn), **hp})


def unlearned_model(setup: "RubSetup", method: str, *, seed: int = 0,
                    hyper_parameters: dict | None = None) -> tuple[nn.Module, float]:
    """``method``'s unlearned model for ``setup`` and ``seed``, and the seconds the unlearning took.

    ``hyper_parameters`` override the method's defaults on top of the budget's options for it
    (``setup.config.method_options``), as in :func:`run_rub`. The model is cached under
    ``data/cache``, keyed by the original model, the method (its name, effective hyper-parameters
    and source), the seed and the forget and retain sets' contents: a rerun of the benchmark, or a
    chapter that looks at one model up close, loads it instead of unlearning again.
    """
    overrides = {**setup.config.method_options(method), **(hyper_parameters or {})}
    hp = effective_hyper_parameters(method, overrides, setup)
    config = {"stage": "rub-unlearned", "original": Path(setup.original_info["path"]).name, "method": method,
              "hp_key": hp_key(method, overrides, setup), "seed": int(seed)}
    model, info = cached_unlearning(
        "rub-unlearned", config, setup.new_model,
        lambda: CLASSIFICATION_METHODS.get(method)(setup.original, setup.forget, setup.retain, seed=seed, **hp),
        data=(setup.forget, setup.retain))
    return model, float(info["unlearn_seconds"])


def benchmark_key(dataset: str, model_name: str, cfg: RubConfig, forget_classes, forget_share,
                  hyper_parameters: dict) -> tuple[str, dict]:
    """The configuration that makes rows comparable (not the method list, seeds count or eps list).

    It depends on the request only, so the results file is opened (and checked) before any training.
    """
    ident = {"task": "classification", "dataset": dataset, "model": model_name,
             "width": cfg.width, "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
             "shadow_epochs": cfg.shadow_epochs, "landing": cfg.landing,
             "attack_samples": cfg.attack_samples, "uma_steps": cfg.uma_steps, "mia_seeds": cfg.mia_seeds,
             "forget_classes": [] if forget_share is not None else [int(c) for c in (forget_classes or [])],
             "forget_share": forget_share, "hyper_parameters": hyper_parameters}
    return config_key(ident), ident


@recipe("rub-classification", chapter="5", command="course-lib rub --task classification")
def run_rub(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
            methods: Sequence[str] | str = "all", forget_classes: Sequence[int] | None = (0,),
            forget_share: float | None = None, eps: Sequence[float] = DEFAULT_EPS, seeds: int | None = None,
            mia_seeds: int | None = None, hyper_parameters: dict | None = None, out: str | Path | None = None,
            config: RubConfig | None = None, progress: bool = True,
            on_row: Callable[[dict], None] | None = None) -> RubResult:
    """Run (or resume) the RUB classification benchmark; used by chapter 5 and ``course-lib rub``.

    Parameters
    ----------
    methods:
        ``"all"`` (every registered method, including a learner's own) or a list of names.
    forget_classes / forget_share:
        Class-wise forgetting of these classes (default class 0), or random forgetting of this
        share of the training samples (then pass ``forget_classes=None``).
    eps:
        UMA radii on [0, 1] pixels; 0 is "no attack".
    seeds, mia_seeds:
        Number of unlearning seeds (0..seeds-1) and MIA seeds (default: the profile's).
    hyper_parameters:
        ``{method: {name: value}}`` overriding a method's defaults.
    out:
        Folder of the results file ``rub-<key>.jsonl`` (default ``results_dir("rub")``:
        ``$COURSE_RESULTS_DIR/rub``, else ``results/rub``); the key hashes the configuration, so a
        run with the same settings resumes the same file.
    on_row:
        Called with each new row right after it is written (progress reports, tests).

    Every unlearned model is cached (:func:`unlearned_model`): a rerun, or a chapter that looks at
    one of them up close, loads it.

    Returns
    -------
    RubResult
    """
    t_start = time.perf_counter()
    hyper_parameters = {k: dict(v) for k, v in (hyper_parameters or {}).items()}
    # validate everything cheap before training anything or touching the results folder
    if forget_share is not None:
        forget_classes = None
    names = validate_request(dataset, forget_classes, forget_share, list(eps), methods)
    unknown_hp = sorted(set(hyper_parameters) - set(names))
    if unknown_hp:
        raise CourseError(f"Hyper-parameters given for method(s) not in the run: {', '.join(unknown_hp)}.")
    cfg = config or RubConfig.for_profile(profile)
    cfg = replace(cfg, seeds=cfg.seeds if seeds is None else int(seeds),
                  mia_seeds=cfg.mia_seeds if mia_seeds is None else int(mia_seeds))
    if cfg.seeds < 1 or cfg.mia_seeds < 1:
        raise CourseError(f"seeds and mia_seeds must be >= 1; got {cfg.seeds} and {cfg.mia_seeds}.")
    eps = sorted({round(float(e), 10) for e in eps})
    train_split = data_mod.load(dataset, "train")
    validate_request(dataset, forget_classes, forget_share, list(eps), names, train_split.num_classes)
    model_name = model or default_model_for(train_split.kind)
    MODELS.get(model_name)
    key, ident = benchmark_key(dataset, model_name, cfg, forget_classes, forget_share, hyper_parameters)
    out_dir = prepare_output(Path(out) if out is not None else results_dir("rub"))
    store = RowStore(out_dir / f"rub-{key}.jsonl", ident, row_id)  # read and checked before any training
    path = store.path
    setup = prepare_rub(dataset, model_name, forget_classes=forget_classes, forget_share=forget_share,
                        config=cfg, progress=progress)
    # a row counts as done only if it was computed with the method's current hyper-parameters
    # (defaults included): rows of an edited method are dropped and recomputed, never duplicated
    # the method's own hyper-parameters: the budget's options (the adaptive landing, when on), then the caller's
    method_hp = {n: {**cfg.method_options(n), **hyper_parameters.get(n, {})} for n in names}
    current_hp = {n: hp_key(n, method_hp[n], setup) for n in names}
    store.drop(lambda r: r["method"] in current_hp and r.get("hp_key") != current_hp[r["method"]])
    computed = 0
    mia_ids = [100 + k for k in range(cfg.mia_seeds)]
    mias = [setup.shadow_mia(s, progress=progress) for s in mia_ids]
    retain_probe = setup.retain.subset(data_mod.sample_indices(setup.retain, min(500, len(setup.retain)), seed=0))
    svc_test = setup.test_eval

    def write(row: dict) -> None:
        nonlocal computed
        store.append(row)
        computed += 1
        if on_row is not None:
            on_row(row)

    def measure(model_u: nn.Module, x_eval: torch.Tensor, y_eval: torch.Tensor) -> dict:
        probs = predict_proba(model_u, x_eval)
        return {"ua": float((probs.argmax(1) == y_eval).float().mean()),
                "mia": [float(m.is_member(probs, y_eval).mean()) for m in mias],
                "mia_svc": [svc_mia_efficacy(model_u, setup.retain, svc_test, x_eval, y_eval, seed=s) for s in mia_ids]}

    fe = setup.forget_eval
    base = {"benchmark": key, "dataset": dataset, "model": setup.model_name, "profile": cfg.profile}
    if ("original", 0, 0.0) not in store:
        m = measure(setup.original, fe.x, fe.y)
        zero = torch.zeros(len(fe))
        verdict = robustness_verdict(zero, zero, zero, eps1=cfg.eps1, eps2=cfg.eps2)
        write({**base, "method": "original", "seed": 0, "eps": 0.0, "ta": accuracy(setup.original, setup.test_eval),
               "ra": accuracy(setup.original, retain_probe),
               **m, "unlearn_seconds": 0.0, "attack": {"steps": 0, "seconds": 0.0},
               "verdict": {**verdict, "metric": "tv_distance"}})

    jobs = [(m, s) for m in names for s in range(cfg.seeds)]
    bar = tqdm(jobs, desc="RUB", disable=not progress)
    for method, seed in bar:
        missing = [e for e in eps if (method, seed, e) not in store]
        if not missing:
            continue
        bar.set_postfix_str(f"{method} seed {seed}")
        hp = effective_hyper_parameters(method, method_hp[method], setup)
        unlearned, unlearn_seconds = unlearned_model(setup, method, seed=seed,
                                                     hyper_parameters=hyper_parameters.get(method))
        ta = accuracy(unlearned, setup.test_eval)
        ra = accuracy(unlearned, retain_probe)  # RA: accuracy on D_r (a fixed random 500 of it)
        dist_forget = output_distance(setup.original, unlearned, fe.x)
        dist_retain = output_distance(setup.original, unlearned, retain_probe.x)
        for e in missing:
            attack = unlearning_mapping_attack(setup.original, unlearned, fe.x, eps=e, steps=cfg.uma_steps,
                                               seed=seed)
            m = measure(unlearned, attack.x_adv, fe.y)
            verdict = robustness_verdict(attack.distance_after, dist_forget, dist_retain, eps1=cfg.eps1,
                                         eps2=cfg.eps2)
            verdict["metric"] = "tv_distance"
            write({**base, "method": method, "seed": seed, "eps": e, "ta": ta, "ra": ra, **m, "hp_key": current_hp[method],
                   "unlearn_seconds": round(unlearn_seconds, 3), "attack": attack.cost(),
                   "divergence_after_mean": float(attack.divergence_after.mean()),
                   "distance_after_mean": float(attack.distance_after.mean()),
                   "hyper_parameters": {k: v for k, v in hp.items()}, "verdict": verdict})
    bar.close()
    keep_methods = set(names)
    selected = [r for r in store.rows if r["method"] == "original" or
                (r["method"] in keep_methods and r["seed"] < cfg.seeds and any(abs(r["eps"] - e) < 1e-9 for e in eps))]
    conf = {**ident, "profile": cfg.profile, "seeds": cfg.seeds, "original_test_accuracy": setup.original_info.get("test_accuracy"),
            "n_forget": len(setup.forget), "n_retain": len(setup.retain), "n_forget_eval": len(fe),
            "n_test_eval": len(setup.test_eval), "eps1": cfg.eps1, "eps2": cfg.eps2}
    return RubResult(selected, names, eps, conf, str(path), computed, time.perf_counter() - t_start)
