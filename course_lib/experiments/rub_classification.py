"""RUB for classification (chapter 5): unlearn, measure TA / UA / MIA, attack with UMA, repeat over seeds.

The recipe follows Sections 4-5.1 of the RUB paper:

1. **Original model** f: the architecture trained on the *whole* training split (D = D_u U D_r),
   cached under ``data/cache`` keyed by its configuration.
2. **Forget set** D_u: whole classes (class-wise forgetting, RUB's Table 1; default class 0) or a
   random share of the samples (random forgetting). D_r is the rest of the training split.
3. For every unlearning method, every unlearning seed and every attack radius eps, one **row**:
   TA (test accuracy, on the retained classes for class-wise forgetting), UA (raw accuracy on the
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

import math
import time
from dataclasses import dataclass, field, replace
from typing import ClassVar
from pathlib import Path
from typing import Callable, Sequence

import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_mod
from ..attacks.membership import ShadowMIA, fit_shadow_mia, shadow_halves, svc_mia_efficacy
from ..attacks.uma import output_distance, robustness_verdict, unlearning_mapping_attack
from ..cache import cached_model, config_key
from ..results import RowStore, prepare_output
from ..budgets import Budget
from ..config import get_device, seed_everything
from ..data import Dataset
from ..errors import CourseError, check_range
from ..recipes import recipe
from ..models import MODELS, build_model, default_model_for
from ..train import accuracy, predict_proba, train_model
from ..unlearn import CLASSIFICATION_METHODS, method_defaults
from .rub_result import RubResult

DEFAULT_EPS = (0.0, 8 / 255, 16 / 255)
@dataclass(frozen=True)
class RubConfig(Budget):
    """Budget of the RUB benchmark per profile (the algorithm never changes, only sizes).

    Attributes
    ----------
    width, epochs, lr, batch_size:
        The original model's training (SGD, momentum 0.9, weight decay 5e-4, linear decay);
        ``retrain`` uses the same schedule.
    shadow_epochs:
        Epochs of each shadow model on its half of the test split (500 samples on mnist-5k):
        more epochs than the original's, so that it takes a comparable number of SGD steps and
        becomes about as confident on its members as the target is on its own.
    attack_samples:
        How many forget samples (a fixed random choice) UA, MIA and UMA are evaluated on
        (``None``: all of them).
    uma_steps:
        PGD iterations of the Unlearning Mapping Attack.
    seeds, mia_seeds:
        Unlearning seeds and MIA seeds (RUB: 10 x 5).
    eps1, eps2:
        Margins of eq. (1) / Proposition 4 on the total-variation distance between the unlearned
        and the original model's outputs (0..1): forgetting needs E_{D_u} > eps1, utility
        E_{D_r} <= eps2; a forget sample is "mapped back" when UMA brings it within eps1.
    preferred_dataset:
        The dataset chapter 5 uses at this budget when it is on disk (``full``: RUB's CIFAR-10),
        see :meth:`dataset`.
    """

    profile: str = "standard"
    width: int = 16
    epochs: int = 6
    lr: float = 0.05
    batch_size: int = 64
    shadow_epochs: int = 24
    attack_samples: int | None = 300
    uma_steps: int = 20
    seeds: int = 3
    mia_seeds: int = 2
    eps1: float = 0.5
    eps2: float = 0.1
    preferred_dataset: str | None = None

    budget_name: ClassVar[str] = "rub"
    # quick and standard share the original model (same width and epochs), so the cached
    # checkpoint is reused and the methods' defaults, tuned on it, hold in both
    PROFILES: ClassVar[dict] = {
        "quick": dict(profile="quick", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                      attack_samples=100, uma_steps=10, seeds=1, mia_seeds=1),
        "standard": dict(profile="standard", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                         attack_samples=300, uma_steps=20, seeds=3, mia_seeds=2),
        "full": dict(profile="full", width=32, epochs=30, lr=0.05, batch_size=64, shadow_epochs=120,
                     attack_samples=None, uma_steps=50, seeds=10, mia_seeds=5, preferred_dataset="cifar10"),
    }

    def dataset(self) -> str:
        """The chapter's dataset at this budget: ``preferred_dataset`` when it is on disk, else ``mnist-5k``."""
        from ..data import is_available

        if self.preferred_dataset and is_available(self.preferred_dataset)[0]:
            return self.preferred_dataset
        return "mnist-5k"

    def check(self) -> None:
        for name in ("width", "epochs", "batch_size", "shadow_epochs", "uma_steps", "seeds", "mia_seeds"):
            if getattr(self, name) < 1:
                raise CourseError(f"RUB's {name} must be at least 1; got {getattr(self, name)}.")
        if self.attack_samples is not None and self.attack_samples < 1:
            raise CourseError(f"attack_samples must be at least 1 (or None: all); got {self.attack_samples}.")
        check_range(self.eps1, 0.0, 1.0, "eps1")
        check_range(self.eps2, 0.0, 1.0, "eps2")


# --------------------------------------------------------------------------- the setting

@dataclass
class RubSetup:
    """Everything the benchmark needs before any unlearning: data split, original model, MIA pools.

    ``forget`` / ``retain`` are D_u / D_r (training split); ``test_eval`` is the test split used for
    TA (the retained classes only under class-wise forgetting); ``forget_eval`` holds the forget
    samples UA, MIA and UMA are measured on.
    """

    dataset: str
    model_name: str
    config: RubConfig
    train: Dataset
    test: Dataset
    forget: Dataset
    retain: Dataset
    forget_eval: Dataset
    test_eval: Dataset
    original: nn.Module
    forget_classes: list[int]
    forget_share: float | None
    device: torch.device
    original_info: dict = field(default_factory=dict)
    _shadows: dict = field(default_factory=dict)

    def train_schedule(self) -> dict:
        c = self.config
        return {"epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size, "momentum": 0.9,
                "weight_decay": 5e-4, "schedule": "linear"}

    def new_model(self) -> nn.Module:
        return build_model(self.model_name, self.train.input_shape, self.train.num_classes,
                           width=self.config.width).to(self.device)

    def shadow_mia(self, mia_seed: int, progress: bool = False) -> ShadowMIA:
        """The shadow-model MIA for ``mia_seed`` (shadow model cached on disk, attack fitted once)."""
        if mia_seed in self._shadows:
            return self._shadows[mia_seed]
        members, non_members = shadow_halves(self.test, seed=mia_seed)
        sched = {**self.train_schedule(), "epochs": self.config.shadow_epochs}
        cfg = {"stage": "rub-shadow", "dataset": self.dataset, "model": self.model_name,
               "width": self.config.width, **sched, "mia_seed": mia_seed, "n_members": len(members)}

        def build() -> nn.Module:
            seed_everything(1000 + mia_seed)
            return self.new_model()

        def fit(m: nn.Module) -> dict:
            train_model(m, members, seed=1000 + mia_seed, progress=progress, desc="shadow model",
                        **sched)
            return {"member_accuracy": accuracy(m, members), "non_member_accuracy": accuracy(m, non_members)}

        shadow, _, _ = cached_model("rub-shadow", cfg, build, fit, data=(members,))
        mia = fit_shadow_mia(shadow, members, non_members, seed=mia_seed)
        self._shadows[mia_seed] = mia
        return mia


def _forget_indices(train: Dataset, forget_classes: Sequence[int], forget_share: float | None) -> torch.Tensor:
    if forget_share is not None:
        n = max(1, int(round(forget_share * len(train))))
        return data_mod.sample_indices(train, n, seed=0).sort().values
    mask = torch.zeros(len(train), dtype=torch.bool)
    for c in forget_classes:
        mask |= train.y == int(c)
    return torch.nonzero(mask).flatten()


def validate_request(dataset: str, forget_classes: Sequence[int] | None, forget_share: float | None,
                     eps: Sequence[float], methods: Sequence[str] | str, num_classes: int | None = None) -> list[str]:
    """Check every user choice before anything is trained or written; return the method names.

    Raises :class:`CourseError` for an unknown method, an eps outside [0, 1], a forget class the
    dataset does not have, or both / neither of class-wise and random forgetting.
    """
    names = CLASSIFICATION_METHODS.names() if methods in ("all", None) else list(methods)
    for n in names:
        CLASSIFICATION_METHODS.get(n)
    if len(set(names)) != len(names):
        raise CourseError(f"A method is listed twice in {names}.")
    if not eps:
        raise CourseError("Give at least one attack radius eps (0 means no attack).")
    for e in eps:
        if not isinstance(e, (int, float)) or math.isnan(e):
            raise CourseError(f"eps must be a number; got {e!r}.")
        check_range(float(e), 0.0, 1.0, "eps (L-inf radius on [0, 1] pixels, e.g. 8/255)")
    if forget_share is not None and forget_classes:
        raise CourseError("Choose class-wise forgetting (forget classes) or random forgetting (a forget share), not both.")
    if forget_share is not None:
        check_range(float(forget_share), 0.0, 1.0, "forget share", low_open=True, high_open=True)
    elif not forget_classes:
        raise CourseError("Choose which classes to forget (e.g. --forget-classes 0) or a forget share.")
    if num_classes is not None and forget_classes:
        bad = [c for c in forget_classes if not 0 <= int(c) < num_classes]
        if bad:
            raise CourseError(f"Unknown forget class(es) {bad}: {dataset} has classes 0..{num_classes - 1}.")
        if len(set(int(c) for c in forget_classes)) >= num_classes:
            raise CourseError("Cannot forget every class: keep at least one class to measure test accuracy on.")
    return names


def prepare_rub(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                forget_classes: Sequence[int] | None = (0,), forget_share: float | None = None,
                config: RubConfig | None = None, progress: bool = True) -> RubSetup:
    """Load the data, split D_u / D_r and train (or load from cache) the original model; chapter 5."""
    cfg = config or RubConfig.for_profile(profile)
    forget_classes = [] if forget_share is not None else [int(c) for c in (forget_classes or [])]
    train = data_mod.load(dataset, "train")
    test = data_mod.load(dataset, "test")
    validate_request(dataset, forget_classes, forget_share, [0.0], [], train.num_classes)
    model_name = model or default_model_for(train.kind)
    MODELS.get(model_name)
    device = get_device()
    idx = _forget_indices(train, forget_classes, forget_share)
    forget, retain = train.subset(idx), train.without(idx)
    if len(retain) == 0:
        raise CourseError("The retain set is empty; forget fewer samples.")
    n_eval = len(forget) if cfg.attack_samples is None else min(cfg.attack_samples, len(forget))
    forget_eval = forget.subset(data_mod.sample_indices(forget, n_eval, seed=0).sort().values)
    if forget_classes:
        keep = torch.ones(len(test), dtype=torch.bool)
        for c in forget_classes:
            keep &= test.y != c
        test_eval = test.subset(torch.nonzero(keep).flatten())
    else:
        test_eval = test
    sched = {"epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size, "momentum": 0.9,
             "weight_decay": 5e-4, "schedule": "linear"}
    ocfg = {"stage": "rub-original", "dataset": dataset, "model": model_name, "width": cfg.width,
            "seed": 0, "n_train": len(train), **sched}

    def build() -> nn.Module:
        seed_everything(0)
        return build_model(model_name, train.input_shape, train.num_classes, width=cfg.width).to(device)

    def fit(m: nn.Module) -> dict:
        t0 = time.perf_counter()
        train_model(m, train, seed=0, progress=progress, desc=f"train the original model on {dataset}", **sched)
        return {"test_accuracy": accuracy(m, test), "train_seconds": time.perf_counter() - t0}

    original, info, path = cached_model("rub-original", ocfg, build, fit, data=(train,))
    original.eval()
    return RubSetup(dataset, model_name, cfg, train, test, forget, retain, forget_eval, test_eval, original,
                    forget_classes, forget_share, device, {**info, "path": str(path)})


# --------------------------------------------------------------------------- results file

def row_id(row: dict) -> tuple:
    """What makes a classification row unique: (method, seed, eps)."""
    return (row["method"], int(row["seed"]), round(float(row["eps"]), 10))


# --------------------------------------------------------------------------- the benchmark

def hp_key(method: str, overrides: dict, setup: "RubSetup") -> str:
    """Hash of a method's effective hyper-parameters (its defaults updated by ``overrides``)."""
    hp = {**method_defaults(CLASSIFICATION_METHODS.get(method)), **overrides}
    if method == "retrain":
        hp.update(setup.train_schedule())
    hp.pop("seed", None)
    return config_key({"method": method, **hp})


def benchmark_key(dataset: str, model_name: str, cfg: RubConfig, forget_classes, forget_share,
                  hyper_parameters: dict) -> tuple[str, dict]:
    """The configuration that makes rows comparable (not the method list, seeds count or eps list).

    It depends on the request only, so the results file is opened (and checked) before any training.
    """
    ident = {"task": "classification", "dataset": dataset, "model": model_name,
             "width": cfg.width, "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size,
             "shadow_epochs": cfg.shadow_epochs,
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
        Folder of the results file ``rub-<key>.jsonl`` (default ``results/rub``); the key hashes
        the configuration, so a run with the same settings resumes the same file.
    on_row:
        Called with each new row right after it is written (progress reports, tests).

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
    out_dir = prepare_output(Path(out) if out is not None else Path("results") / "rub")
    store = RowStore(out_dir / f"rub-{key}.jsonl", ident, row_id)  # read and checked before any training
    path = store.path
    setup = prepare_rub(dataset, model_name, forget_classes=forget_classes, forget_share=forget_share,
                        config=cfg, progress=progress)
    # a row counts as done only if it was computed with the method's current hyper-parameters
    # (defaults included): rows of an edited method are dropped and recomputed, never duplicated
    current_hp = {n: hp_key(n, hyper_parameters.get(n, {}), setup) for n in names}
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
               **m, "unlearn_seconds": 0.0, "attack": {"steps": 0, "seconds": 0.0},
               "verdict": {**verdict, "metric": "tv_distance"}})

    jobs = [(m, s) for m in names for s in range(cfg.seeds)]
    bar = tqdm(jobs, desc="RUB", disable=not progress)
    for method, seed in bar:
        missing = [e for e in eps if (method, seed, e) not in store]
        if not missing:
            continue
        bar.set_postfix_str(f"{method} seed {seed}")
        hp = dict(hyper_parameters.get(method, {}))
        if method == "retrain":
            for k, v in setup.train_schedule().items():
                hp.setdefault(k, v)
        t0 = time.perf_counter()
        unlearned = CLASSIFICATION_METHODS.get(method)(setup.original, setup.forget, setup.retain, seed=seed, **hp)
        unlearn_seconds = time.perf_counter() - t0
        unlearned.eval()
        ta = accuracy(unlearned, setup.test_eval)
        dist_forget = output_distance(setup.original, unlearned, fe.x)
        dist_retain = output_distance(setup.original, unlearned, retain_probe.x)
        for e in missing:
            attack = unlearning_mapping_attack(setup.original, unlearned, fe.x, eps=e, steps=cfg.uma_steps,
                                               seed=seed)
            m = measure(unlearned, attack.x_adv, fe.y)
            verdict = robustness_verdict(attack.distance_after, dist_forget, dist_retain, eps1=cfg.eps1,
                                         eps2=cfg.eps2)
            verdict["metric"] = "tv_distance"
            write({**base, "method": method, "seed": seed, "eps": e, "ta": ta, **m, "hp_key": current_hp[method],
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
