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
from fractions import Fraction
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from .. import data as data_mod
from ..attacks.membership import ShadowMIA, fit_shadow_mia, shadow_halves, svc_mia_efficacy
from ..attacks.uma import output_distance, robustness_verdict, unlearning_mapping_attack
from ..cache import cached_model, config_key
from ..results import RowStore
from ..budgets import Budget
from ..config import get_device, seed_everything
from ..data import Dataset
from ..errors import CourseError, check_range
from ..models import MODELS, build_model, default_model_for
from ..train import accuracy, predict_proba, train_model
from ..unlearn import CLASSIFICATION_METHODS, method_defaults

DEFAULT_EPS = (0.0, 8 / 255, 16 / 255)
#: RUB's Table 1 rows for CIFAR-10 (ResNet-50, class 0 forgotten), copied from the paper for comparison:
#: method -> (TA, UA, MIA, UA@8/255, MIA@8/255, UA@16/255, MIA@16/255); TA and UA in %.
PAPER_CIFAR10 = {
    "Original": (94.13, 100, 0.9796, None, None, None, None),
    "retrain": (94.14, 0, 0, 0, 0, 0, 0),
    "FT": (91.82, 20.55, 0.088, 99.96, 0.995, 99.98, 0.995),
    "RL": (92.19, 0, 0, 5.82, 0.024, 26.64, 0.135),
    "IU": (88.06, 8.76, 0.058, 99.12, 0.965, 99.87, 0.983),
    "l1-sparse": (90.00, 0, 0, 98.30, 0.871, 99.90, 0.978),
    "SalUn": (92.70, 0, 0, 7.13, 0.036, 26.87, 0.148),
}


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

    budget_name: ClassVar[str] = "rub"
    # quick and standard share the original model (same width and epochs), so the cached
    # checkpoint is reused and the methods' defaults, tuned on it, hold in both
    PROFILES: ClassVar[dict] = {
        "quick": dict(profile="quick", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                      attack_samples=100, uma_steps=10, seeds=1, mia_seeds=1),
        "standard": dict(profile="standard", width=16, epochs=6, lr=0.05, batch_size=64, shadow_epochs=24,
                         attack_samples=300, uma_steps=20, seeds=3, mia_seeds=2),
        "full": dict(profile="full", width=32, epochs=30, lr=0.05, batch_size=64, shadow_epochs=120,
                     attack_samples=None, uma_steps=50, seeds=10, mia_seeds=5),
    }

    def check(self) -> None:
        for name in ("width", "epochs", "batch_size", "shadow_epochs", "uma_steps", "seeds", "mia_seeds"):
            if getattr(self, name) < 1:
                raise CourseError(f"RUB's {name} must be at least 1; got {getattr(self, name)}.")
        if self.attack_samples is not None and self.attack_samples < 1:
            raise CourseError(f"attack_samples must be at least 1 (or None: all); got {self.attack_samples}.")
        check_range(self.eps1, 0.0, 1.0, "eps1")
        check_range(self.eps2, 0.0, 1.0, "eps2")


def eps_label(eps: float) -> str:
    """``8/255``-style label for multiples of 1/255, else the number."""
    frac = Fraction(eps).limit_denominator(255)
    if abs(float(frac) - eps) < 1e-9 and 255 % frac.denominator == 0:
        return "0" if eps == 0 else f"{frac.numerator * (255 // frac.denominator)}/255"
    return f"{eps:g}"


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

        shadow, _, _ = cached_model("rub-shadow", cfg, build, fit)
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

    original, info, path = cached_model("rub-original", ocfg, build, fit)
    original.eval()
    return RubSetup(dataset, model_name, cfg, train, test, forget, retain, forget_eval, test_eval, original,
                    forget_classes, forget_share, device, {**info, "path": str(path)})


# --------------------------------------------------------------------------- results file

def row_id(row: dict) -> tuple:
    """What makes a classification row unique: (method, seed, eps)."""
    return (row["method"], int(row["seed"]), round(float(row["eps"]), 10))


# --------------------------------------------------------------------------- the benchmark

def _mean_std(values: Sequence[float]) -> tuple[float, float]:
    arr = np.asarray([v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))], float)
    if arr.size == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else 0.0


@dataclass
class RubResult:
    """Rows of a RUB run and their summaries (chapter 5, ``course-lib rub``).

    ``rows``: one dict per (method, seed, eps) with ``ta``, ``ua`` (0..1), ``mia`` (list over MIA
    seeds, share judged members), ``mia_svc`` (list, SalUn's MIA-efficacy), ``verdict``
    (Proposition 4), ``attack`` (cost) and ``unlearn_seconds``.
    """

    rows: list[dict]
    methods: list[str]
    eps: list[float]
    config: dict
    results_path: str
    computed_rows: int = 0
    seconds: float = 0.0

    @staticmethod
    def _robust(rows: list[dict]):
        vs = [r["verdict"] for r in rows if r.get("verdict", {}).get("metric") == "total_variation"]
        return all(v["robust"] for v in vs) if vs and len(vs) == len(rows) else None

    @staticmethod
    def _mapped(rows: list[dict]):
        vs = [r["verdict"]["mapped_back_share"] for r in rows
              if r.get("verdict", {}).get("metric") == "total_variation"]
        return _mean_std(vs)[0] if vs else float("nan")

    def _select(self, method: str, eps: float) -> list[dict]:
        return [r for r in self.rows if r["method"] == method and abs(r["eps"] - eps) < 1e-9]

    def summary(self) -> list[dict]:
        """Numeric table: one record per method with mean / std of every column."""
        out = []
        for method in ["original"] + [m for m in self.methods if m != "original"]:
            rec = {"method": method if method != "original" else "Original"}
            for e in (self.eps if method != "original" else [0.0]):
                rows = self._select(method, e)
                if not rows:
                    continue
                tag = eps_label(e)
                ta = _mean_std([r["ta"] * 100 for r in rows])
                ua = _mean_std([r["ua"] * 100 for r in rows])
                mia = _mean_std([v for r in rows for v in r["mia"]])
                svc = _mean_std([v for r in rows for v in r["mia_svc"]])
                if e == 0:
                    rec.update(ta_mean=ta[0], ta_std=ta[1])
                rec.update({f"ua_mean@{tag}": ua[0], f"ua_std@{tag}": ua[1], f"mia_mean@{tag}": mia[0],
                            f"mia_std@{tag}": mia[1], f"mia_svc_mean@{tag}": svc[0], f"mia_svc_std@{tag}": svc[1],
                            f"robust@{tag}": self._robust(rows) if method != "original" else None,
                            f"mapped_back@{tag}": self._mapped(rows) if method != "original" else None,
                            f"n@{tag}": len(rows)})
                if e > 0:
                    rec[f"attack_seconds@{tag}"] = _mean_std([r["attack"]["seconds"] for r in rows])[0]
            if method != "original":
                rows0 = [r for r in self.rows if r["method"] == method]
                if rows0:
                    rec["unlearn_seconds"] = _mean_std([r["unlearn_seconds"] for r in rows0])[0]
            out.append(rec)
        return out

    def table(self):
        """Table 1's analogue as a pandas DataFrame of ``mean ± std`` strings (TA, UA in %, MIA 0..1)."""
        import pandas as pd

        def fmt(m, s, digits):
            if m is None or (isinstance(m, float) and math.isnan(m)):
                return "-"
            return f"{m:.{digits}f} ± {s:.{digits}f}"

        records = []
        for rec in self.summary():
            row = {"method": rec["method"], "TA": fmt(rec.get("ta_mean"), rec.get("ta_std"), 2)}
            for e in self.eps:
                tag = eps_label(e)
                head = "no attack" if e == 0 else f"ε={tag}"
                row[f"UA ({head})"] = fmt(rec.get(f"ua_mean@{tag}"), rec.get(f"ua_std@{tag}"), 2)
                row[f"MIA ({head})"] = fmt(rec.get(f"mia_mean@{tag}"), rec.get(f"mia_std@{tag}"), 3)
            e0 = eps_label(0.0)
            row["MIA-efficacy SVC (no attack)"] = fmt(rec.get(f"mia_svc_mean@{e0}"), rec.get(f"mia_svc_std@{e0}"), 3)
            records.append(row)
        return pd.DataFrame(records).set_index("method")

    def verdicts(self):
        """Proposition 4 per method and eps: robust (every seed) and the share of samples mapped back."""
        import pandas as pd

        recs = []
        for m in self.methods:
            for e in self.eps:
                rows = self._select(m, e)
                if rows:
                    tv = [r for r in rows if r.get("verdict", {}).get("metric") == "total_variation"]
                    recs.append({"method": m, "eps": eps_label(e),
                                 "forgets (eq. 1)": all(r["verdict"]["forgets"] for r in tv) if tv else None,
                                 "keeps utility (eq. 1)": all(r["verdict"]["keeps_utility"] for r in tv) if tv else None,
                                 "mapped back (share)": round(self._mapped(rows), 3),
                                 "robust (Prop. 4)": self._robust(rows)})
        return pd.DataFrame(recs)

    def rub_pattern(self, eps: float | None = None) -> dict:
        """Whether the run shows RUB's pattern at ``eps`` (default the largest): retrain's UA stays
        <= 5 % under attack while the methods' UA regains >= 30 points; per-method gains in points."""
        eps = max(self.eps) if eps is None else eps
        tag, t0 = eps_label(eps), eps_label(0.0)
        summ = {r["method"]: r for r in self.summary()}
        gains = {m: summ[m].get(f"ua_mean@{tag}", float("nan")) - summ[m].get(f"ua_mean@{t0}", float("nan"))
                 for m in self.methods if m in summ and m != "retrain"}
        retrain_ua = summ.get("retrain", {}).get(f"ua_mean@{tag}", float("nan"))
        regain = sorted(m for m, g in gains.items() if g >= 30)
        return {"eps": eps, "retrain_ua_under_attack": retrain_ua, "ua_gain_points": gains,
                "methods_regaining_30_points": regain,
                "pattern": bool(retrain_ua <= 5 and len(regain) >= 2)}

    def plot(self):
        """UA (%) and MIA against eps per method (mean with std error bars); retrain dashed."""
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        summ = {r["method"]: r for r in self.summary()}
        xs = [e * 255 for e in self.eps]
        for m in self.methods:
            rec = summ.get(m)
            if not rec:
                continue
            style = dict(color="black", ls="--", lw=2) if m == "retrain" else dict(marker="o")
            for ax, key, scale in ((axes[0], "ua", 1.0), (axes[1], "mia", 1.0)):
                ys = [rec.get(f"{key}_mean@{eps_label(e)}", float("nan")) * scale for e in self.eps]
                err = [rec.get(f"{key}_std@{eps_label(e)}", 0.0) * scale for e in self.eps]
                ax.errorbar(xs, ys, yerr=err, label=m, capsize=3, **style)
        orig = summ.get("Original", {})
        if orig:
            axes[0].axhline(orig.get("ua_mean@0", float("nan")), color="grey", lw=1, ls=":", label="original")
            axes[1].axhline(orig.get("mia_mean@0", float("nan")), color="grey", lw=1, ls=":", label="original")
        axes[0].set_ylabel("UA: accuracy on the forget set (%)")
        axes[1].set_ylabel("MIA: forget samples judged members")
        for ax in axes:
            ax.set_xlabel("UMA radius ε (×1/255)")
            ax.set_xticks(xs)
            ax.grid(alpha=0.3)
        axes[1].legend(fontsize=8, loc="best")
        fig.suptitle(f"RUB on {self.config.get('dataset')}: forgetting before and after the Unlearning Mapping Attack")
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return {"config": self.config, "results_path": self.results_path, "methods": self.methods,
                "eps": self.eps, "computed_rows": self.computed_rows, "seconds": round(self.seconds, 2),
                "summary": self.summary(), "pattern": self.rub_pattern(), "rows": self.rows}


def hp_key(method: str, overrides: dict, setup: "RubSetup") -> str:
    """Hash of a method's effective hyper-parameters (its defaults updated by ``overrides``)."""
    hp = {**method_defaults(CLASSIFICATION_METHODS.get(method)), **overrides}
    if method == "retrain":
        hp.update(setup.train_schedule())
    hp.pop("seed", None)
    return config_key({"method": method, **hp})


def benchmark_key(setup: RubSetup, mia_seeds: int, hyper_parameters: dict) -> tuple[str, dict]:
    """The configuration that makes rows comparable (not the method list, seeds count or eps list)."""
    c = setup.config
    ident = {"task": "classification", "dataset": setup.dataset, "model": setup.model_name,
             "width": c.width, "epochs": c.epochs, "lr": c.lr, "batch_size": c.batch_size,
             "shadow_epochs": c.shadow_epochs,
             "attack_samples": c.attack_samples, "uma_steps": c.uma_steps, "mia_seeds": mia_seeds,
             "forget_classes": setup.forget_classes,
             "forget_share": setup.forget_share, "hyper_parameters": hyper_parameters}
    return config_key(ident), ident


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
    setup = prepare_rub(dataset, model, forget_classes=forget_classes, forget_share=forget_share,
                        config=cfg, progress=progress)
    key, ident = benchmark_key(setup, cfg.mia_seeds, hyper_parameters)
    out_dir = Path(out) if out is not None else Path("results") / "rub"
    store = RowStore(out_dir / f"rub-{key}.jsonl", ident, row_id)
    path = store.path
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
               "verdict": {**verdict, "metric": "total_variation"}})

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
        dist_forget = output_distance(unlearned, setup.original, fe.x)
        dist_retain = output_distance(unlearned, setup.original, retain_probe.x)
        for e in missing:
            attack = unlearning_mapping_attack(unlearned, setup.original, fe.x, eps=e, steps=cfg.uma_steps,
                                               seed=seed)
            m = measure(unlearned, attack.x_adv, fe.y)
            verdict = robustness_verdict(attack.distance_after, dist_forget, dist_retain, eps1=cfg.eps1,
                                         eps2=cfg.eps2)
            verdict["metric"] = "total_variation"
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
