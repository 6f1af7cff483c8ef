"""RUB for image-to-image unlearning (chapter 7): inpaint, unlearn, attack, score the retain and forget sets.

The recipe follows RUB's Sections 4.1, 4.2, 4.4 and 5.1 for the I2I task, at course scale:

1. **Original inpainter** f (:mod:`course_lib.models.inpainter`) trained on the whole training
   split, cached by configuration. RUB unlearns an MAE pretrained on ImageNet-1k; here a
   convolutional encoder-decoder on ``mnist-5k`` (``standard``), scikit-learn's 8x8 ``digits``
   (``quick``) or CIFAR-10 (``full``).
2. **Forget and retain classes** (RUB: the first 100 and the last 100 of 200 ImageNet classes;
   here 0-4 and 5-9 by default): D_u and D_r are their training images. Classes in neither set
   are not used by the unlearning.
3. For every method of :data:`~course_lib.unlearn.I2I_METHODS`, every seed and every radius eps of
   the Unlearning Mapping Attack (:mod:`course_lib.attacks.uma_i2i`; eps = 0 is "no attack"), one
   **row**: the forget images (F) and the retain images (R), each under its fixed mask, are
   inpainted (under attack when eps > 0, R included: RUB reports that the attack barely changes
   it), and the outputs are scored with the FD and IS of the course classifier, the classifier's
   accuracy and the MSE inside the hole (:mod:`course_lib.generation_metrics`), plus the attack's
   cost and how close the attacked encoding comes to the original encoder's.
4. Rows go to a JSON-lines :class:`~course_lib.results.RowStore` as soon as they are computed; a
   rerun with the same configuration skips the (method, seed, eps) rows it finds.

:mod:`~course_lib.experiments.rub_inpainting_setup` holds the budget and the setting;
:class:`~course_lib.experiments.rub_inpainting_result.I2IResult` prints the Table 2 analogue.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Callable, Sequence

from tqdm.auto import tqdm

from .. import data as data_mod
from ..attacks.uma_i2i import inpainting_mapping_attack
from ..cache import cached_unlearning, clone_model, config_key, source_key, state_equal
from ..config import results_dir
from ..errors import CourseError
from ..models.inpainter import Inpainter
from ..recipes import recipe
from ..results import RowStore, prepare_output
from ..unlearn import I2I_METHODS, check_hyper_parameters, method_defaults
from .rub_inpainting_result import I2IResult, eps_label
from .rub_inpainting_setup import (DEFAULT_EPS, DEFAULT_FORGET_CLASSES, DEFAULT_RETAIN_CLASSES, I2IConfig, I2ISetup,
                                   check_request, prepare_i2i, validate_i2i_request)

#: RUB's Table 2 (an MAE on 200 ImageNet-1k classes, the first 100 forgotten, scored with the
#: Inception network), copied from the paper for comparison: method -> {(metric, eps, set): value}.
#: eps is "0", "8/255" or "unbounded" (the paper has no 16/255 column); the original model was not attacked.
PAPER_TABLE2 = {
    "original": {("IS", "0", "R"): 6.21, ("IS", "0", "F"): 6.39, ("FD", "0", "R"): 96.12, ("FD", "0", "F"): 103.38},
    "I2I": {("IS", "0", "R"): 6.18, ("IS", "0", "F"): 2.79, ("IS", "8/255", "R"): 6.21, ("IS", "8/255", "F"): 6.22,
            ("IS", "unbounded", "R"): 6.20, ("IS", "unbounded", "F"): 6.35,
            ("FD", "0", "R"): 100.15, ("FD", "0", "F"): 306.43, ("FD", "8/255", "R"): 94.76,
            ("FD", "8/255", "F"): 114.16, ("FD", "unbounded", "R"): 96.98, ("FD", "unbounded", "F"): 110.29},
    "SalUn": {("IS", "0", "R"): 6.05, ("IS", "0", "F"): 2.42, ("IS", "8/255", "R"): 6.02, ("IS", "8/255", "F"): 6.11,
              ("IS", "unbounded", "R"): 6.13, ("IS", "unbounded", "F"): 6.27,
              ("FD", "0", "R"): 130.45, ("FD", "0", "F"): 330.79, ("FD", "8/255", "R"): 102.75,
              ("FD", "8/255", "F"): 133.82, ("FD", "unbounded", "R"): 94.15, ("FD", "unbounded", "F"): 108.44},
}


# --------------------------------------------------------------------------- one row

def row_id(row: dict) -> tuple:
    """What makes an I2I row unique: (method, seed, eps)."""
    return (row["method"], int(row["seed"]), round(float(row["eps"]), 10))


def measure(setup: I2ISetup, model: Inpainter, eps: float, *, progress: bool = False) -> dict:
    """Attack ``model`` at ``eps`` on the forget and the retain images and score both: the row's body.

    ``{"F": {...}, "R": {...}, "attack": {"F": cost, "R": cost}}`` where each set holds the
    :meth:`I2ISetup.score` entries plus ``uma_mse_before`` / ``uma_mse_after`` (eq. 2's D) and
    ``encoding_before`` / ``encoding_after`` (relative distance to the original encoding).
    """
    out: dict = {"attack": {}}
    for split in ("F", "R"):
        images, masks, _ = setup.eval_set(split)
        attack = inpainting_mapping_attack(model, setup.original, images.x, masks, eps=eps,
                                           steps=setup.config.uma_steps, progress=progress)
        out[split] = {**setup.score(attack.output_after, split),
                      "uma_mse_before": float(attack.mse_before.mean()), "uma_mse_after": float(attack.mse_after.mean()),
                      "encoding_before": float(attack.encoding_before.mean()),
                      "encoding_after": float(attack.encoding_after.mean())}
        out["attack"][split] = attack.cost()
    return out


def hp_key(method: str, hyper_parameters: dict, setup: I2ISetup) -> str:
    """Hash of a method's effective hyper-parameters (defaults updated by the overrides) and of its
    source code, so that rows and cached models of an edited method (a learner's own) are redone."""
    fn = I2I_METHODS.get(method)
    hp = {**method_defaults(fn), **effective_hyper_parameters(method, hyper_parameters, setup)}
    hp.pop("seed", None)
    return config_key({"method": method, "source": source_key(fn), **hp})


def unlearned_model(setup: I2ISetup, method: str, *, seed: int = 0,
                    hyper_parameters: dict | None = None) -> tuple[Inpainter, float]:
    """``method``'s unlearned inpainter for ``setup`` and ``seed``, and the seconds the unlearning took.

    Cached under ``data/cache`` keyed by the original model, the method (its name, effective
    hyper-parameters and source), the seed and the forget and retain sets' contents, so a rerun of
    the benchmark or of a chapter loads it instead of unlearning again.
    """
    hyper_parameters = dict(hyper_parameters or {})
    hp = effective_hyper_parameters(method, hyper_parameters, setup)
    config = {"stage": "i2i-unlearned", "original": Path(setup.info["path"]).name, "method": method,
              "hp_key": hp_key(method, hyper_parameters, setup), "seed": int(seed)}
    model, info = cached_unlearning(
        "i2i-unlearned", config, lambda: clone_model(setup.original),
        lambda: I2I_METHODS.get(method)(setup.original, setup.forget, setup.retain, seed=seed, **hp),
        data=(setup.forget, setup.retain))
    return model, float(info["unlearn_seconds"])


def effective_hyper_parameters(method: str, hyper_parameters: dict, setup: I2ISetup) -> dict:
    """The overrides a method runs with: ``retrain`` gets the original's schedule unless told otherwise."""
    hp = dict(hyper_parameters)
    if method == "retrain":
        for k, v in setup.config.schedule().items():
            hp.setdefault(k, v)
    return hp


def benchmark_key(dataset: str, config: I2IConfig, mask: dict, forget_classes: Sequence[int],
                  retain_classes: Sequence[int], hyper_parameters: dict) -> tuple[str, dict]:
    """The configuration that makes rows comparable (not the method list, seeds count or eps list)."""
    c = config
    ident = {"task": "i2i", "dataset": dataset, "width": c.width, "latent": c.latent, "epochs": c.epochs,
             "lr": c.lr, "batch_size": c.batch_size, "mask": mask, "eval_samples": c.eval_samples,
             "uma_steps": c.uma_steps, "uma_optimizers": {"bounded": "sign", "unbounded": "adam"},
             "is_splits": c.is_splits, "evaluator_profile": c.profile,
             "forget_classes": [int(k) for k in forget_classes], "retain_classes": [int(k) for k in retain_classes],
             "hyper_parameters": hyper_parameters}
    return config_key(ident), ident


# --------------------------------------------------------------------------- the recipe

@recipe("rub-i2i", chapter="7", command="course-lib rub --task i2i")
def run_rub_i2i(dataset: str | None = None, *, profile: str | None = None, methods: Sequence[str] | str = "all",
                forget_classes: Sequence[int] = DEFAULT_FORGET_CLASSES,
                retain_classes: Sequence[int] = DEFAULT_RETAIN_CLASSES, eps: Sequence[float] = DEFAULT_EPS,
                seeds: int | None = None, hyper_parameters: dict | None = None, out: str | Path | None = None,
                config: I2IConfig | None = None, setup: I2ISetup | None = None, keep_models: bool = False,
                progress: bool = True, on_row: Callable[[dict], None] | None = None) -> I2IResult:
    """Run (or resume) RUB's image-to-image benchmark; chapter 7 and ``course-lib rub --task i2i``.

    Parameters
    ----------
    dataset:
        Default: the profile's (``digits`` / ``mnist-5k`` / ``cifar10``); ``folder:PATH`` works.
    methods:
        ``"all"`` (every registered I2I method, a learner's own included) or a list of names.
    forget_classes, retain_classes:
        Disjoint, non-empty class lists (default 0-4 and 5-9).
    eps:
        Attack radii on [0, 1] pixels; 0 is "no attack", ``UNBOUNDED`` (1) no limit.
    seeds:
        Number of unlearning seeds (default: the profile's).
    hyper_parameters:
        ``{method: {name: value}}`` overriding a method's defaults.
    out:
        Folder of the results file ``rub-i2i-<key>.jsonl`` (default ``results_dir("rub")``:
        ``$COURSE_RESULTS_DIR/rub``, else ``results/rub``).
    setup:
        A prepared :class:`I2ISetup` (a chapter's), else one is prepared.
    keep_models:
        Return the unlearned models in ``result.models`` (``{(method, seed): model}``); every
        unlearned model is cached (:func:`unlearned_model`), so a rerun loads them.
    on_row:
        Called with each new row right after it is written.
    """
    t_start = time.perf_counter()
    hyper_parameters = {k: dict(v) for k, v in (hyper_parameters or {}).items()}
    names = validate_i2i_request(forget_classes, retain_classes, list(eps), methods)
    unknown_hp = sorted(set(hyper_parameters) - set(names))
    if unknown_hp:
        raise CourseError(f"Hyper-parameters given for method(s) not in the run: {', '.join(unknown_hp)}.")
    for n, hp in hyper_parameters.items():
        check_hyper_parameters(I2I_METHODS, n, hp)
    cfg = setup.config if setup is not None else (config or I2IConfig.for_profile(profile))
    if seeds is not None:
        cfg = cfg.replace(seeds=int(seeds))
    eps = sorted({round(float(e), 10) for e in eps})
    train = None
    if setup is None:
        dataset = dataset or cfg.dataset
        train = data_mod.load(dataset, "train")
        validate_i2i_request(forget_classes, retain_classes, eps, names, train.num_classes, dataset)
        mask = cfg.mask_for(int(train.input_shape[-1])).to_dict()
    elif dataset not in (None, setup.dataset) or [int(c) for c in forget_classes] != setup.forget_classes \
            or [int(c) for c in retain_classes] != setup.retain_classes:
        raise CourseError("The prepared setup was made for another dataset or other classes than this call asks for.")
    else:
        dataset, mask = setup.dataset, setup.info["mask"]
    key, ident = benchmark_key(dataset, cfg, mask, forget_classes, retain_classes, hyper_parameters)
    out_dir = prepare_output(Path(out) if out is not None else results_dir("rub"))
    store = RowStore(out_dir / f"rub-i2i-{key}.jsonl", ident, row_id)  # read and checked before any training
    if setup is None:
        setup = prepare_i2i(dataset, forget_classes=forget_classes, retain_classes=retain_classes, config=cfg,
                            train=train, progress=progress)
    current_hp = {n: hp_key(n, hyper_parameters.get(n, {}), setup) for n in names}
    store.drop(lambda r: r["method"] in current_hp and r.get("hp_key") != current_hp[r["method"]])
    computed, models = 0, {}
    base = {"benchmark": key, "dataset": setup.dataset, "profile": cfg.profile}

    def write(row: dict) -> None:
        nonlocal computed
        store.append(row)
        computed += 1
        if on_row is not None:
            on_row(row)

    if ("original", 0, 0.0) not in store:
        write({**base, "method": "original", "seed": 0, "eps": 0.0, **measure(setup, setup.original, 0.0),
               "unlearn_seconds": 0.0, "decoder_unchanged": True, "encoder_unchanged": True})
    jobs = [(m, s) for m in names for s in range(cfg.seeds)]
    bar = tqdm(jobs, desc="RUB I2I", disable=not progress)
    for method, seed in bar:
        missing = [e for e in eps if (method, seed, e) not in store]
        if not missing:
            continue
        bar.set_postfix_str(f"{method} seed {seed}")
        hp = effective_hyper_parameters(method, hyper_parameters.get(method, {}), setup)
        unlearned, unlearn_seconds = unlearned_model(setup, method, seed=seed, hyper_parameters=hyper_parameters.get(method))
        if keep_models:
            models[(method, seed)] = unlearned
        unchanged = {"decoder_unchanged": state_equal(unlearned.decoder, setup.original.decoder),
                     "encoder_unchanged": state_equal(unlearned.encoder, setup.original.encoder)}
        for e in missing:
            write({**base, "method": method, "seed": seed, "eps": e, **measure(setup, unlearned, e),
                   "unlearn_seconds": round(unlearn_seconds, 3), "hp_key": current_hp[method],
                   "hyper_parameters": hp, **unchanged})
    bar.close()
    if keep_models:   # methods whose rows were all on file: their models come from the cache
        for method, seed in jobs:
            if (method, seed) not in models:
                models[(method, seed)] = unlearned_model(setup, method, seed=seed,
                                                         hyper_parameters=hyper_parameters.get(method))[0]
    keep = set(names)
    selected = [r for r in store.rows if r["method"] == "original" or
                (r["method"] in keep and r["seed"] < cfg.seeds and any(abs(r["eps"] - e) < 1e-9 for e in eps))]
    conf = {**ident, "profile": cfg.profile, "seeds": cfg.seeds, "n_forget": len(setup.forget),
            "n_retain": len(setup.retain), "n_eval": [len(setup.forget_eval), len(setup.retain_eval)],
            "original": {k: setup.info.get(k) for k in ("train_loss", "train_seconds", "from_cache")},
            "evaluator_test_accuracy": setup.evaluator.test_accuracy, "mask_share": setup.info["mask_share"]}
    return I2IResult(selected, names, eps, conf, str(store.path), computed, time.perf_counter() - t_start, models)


__all__ = ["DEFAULT_EPS", "DEFAULT_FORGET_CLASSES", "DEFAULT_RETAIN_CLASSES", "PAPER_TABLE2", "I2IConfig",
           "I2ISetup", "I2IResult", "check_request", "eps_label", "measure", "prepare_i2i", "row_id", "run_rub_i2i",
           "validate_i2i_request"]
