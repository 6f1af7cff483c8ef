"""Chapter 3's studies of feature recovery, each a recipe: seeds, training-set sizes (Table 2), epochs.

Every study repeats the attack of :func:`course_lib.experiments.recovery.run_recovery` (the
developer fine-tunes M0 into M and unlearns, the server inverts theta_u - theta) over one factor
of the paper's Section 5.1 / 6.1, with the inversion run under one or both **presets**:

``"paper"``
    :meth:`InversionConfig.paper`: eqs. (3)-(6) as published (cosine + TV, signed Adam with step
    decay, restarts ranked by the attack loss), every course addition switched off.
``"course"``
    :meth:`InversionConfig.for_profile`: the same attack with the course's additions on
    (:data:`course_lib.attacks.inversion.ADDITIONS`; chapter 3b measures each one).

Recipes (each returns a :class:`RecoveryStudyResult`; ``course-lib recovery-study STUDY`` runs them)
---------------------------------------------------------------------------------------------------
``run_recovery_seeds``   one removed sample per seed, exact and approximate unlearning (Fig. 3)
``run_recovery_sizes``   training sets of N = 4, 8, 16 samples, each removed in turn (Figs. 5-6, Table 2)
``run_recovery_epochs``  more fine-tuning epochs (Fig. 7)

:mod:`course_lib.experiments.recovery_further` holds the others (several samples at once, the
gradient shares, the objective audit, the ablation). :class:`RecoveryStudiesBudget` sizes them all.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import torch

from .. import metrics as M
from ..attacks.inversion import InversionConfig
from ..budgets import Budget
from ..cache import config_key, library_key, read_verified, save_tensors
from ..config import results_dir
from ..data import load as load_dataset
from ..errors import CourseError, check_choice
from ..metrics import finite_mean, finite_median
from ..recipes import Result, recipe
from ..results import prepare_output
from ..train import prepare_pipeline
from .recovery import (LABEL_MODES, PRECISIONS, RecoveryResult, attack_unlearned_model, make_unlearning_case,
                       recovery_model_for)

PRESETS = ("paper", "course")
#: Table 2's third row: exact unlearning attacked with the estimator that also knows theta_0 and N.
REFERENCE = "exact, θ₀ and N known"


@dataclass(frozen=True)
class RecoveryStudiesBudget(Budget):
    """Sizes of chapter 3's studies (chapters 3 and 3b).

    Attributes
    ----------
    seeds:
        Removed samples (one per seed) of the single-sample study (Fig. 3).
    paper_seeds, paper_methods:
        Of those, how many the paper preset also attacks (the same seeds, beside the course's attack),
        and under which unlearning methods.
    sizes:
        Training-set sizes N of the Table 2 study (the paper: 4, 8, 16).
    table2_samples:
        Removed samples per size (each sample of the training set in turn, up to this many).
    reference_size:
        The size at which Table 2 adds the row of the attacker who knows theta_0 and N (``None``: none).
    epochs:
        Fine-tuning epochs of the epochs study (the paper: 1, 2, 3).
    multi:
        How many samples are removed at once in the several-samples study (the paper: 8 to 128).
    share_seeds:
        Seeds of the gradient-shares study (cheap: no inversion).
    audit_seeds:
        Seeds of the objective audit (one course-preset attack each).
    ablation_seeds:
        Seeds of the ablation (one attack per seed and row: paper, + each addition).
    restarts, iterations, feature_iterations, sharpen_iterations:
        The inversion budget of these studies (``None``: the profile's :class:`InversionConfig`).
    """

    budget_name: ClassVar[str] = "recovery-studies"
    PROFILES: ClassVar[dict] = {
        "quick": dict(seeds=1, paper_seeds=1, paper_methods=("approximate",), sizes=(8,), table2_samples=2,
                      reference_size=8, epochs=(1, 2), multi=(2,), share_seeds=2, audit_seeds=1, ablation_seeds=1,
                      restarts=8, iterations=100, feature_iterations=100, sharpen_iterations=50),
        "standard": dict(seeds=2, paper_seeds=2, paper_methods=("approximate",), sizes=(8,), table2_samples=3,
                         reference_size=8, epochs=(1, 2, 3), multi=(4,), share_seeds=4, audit_seeds=2,
                         ablation_seeds=2, restarts=8, iterations=150, feature_iterations=100,
                         sharpen_iterations=100),
        "full": dict(seeds=8, paper_seeds=8, paper_methods=("approximate", "exact"), sizes=(4, 8, 16),
                     table2_samples=8, reference_size=8, epochs=(1, 2, 3), multi=(8, 16, 32), share_seeds=8,
                     audit_seeds=8, ablation_seeds=8),
    }

    seeds: int = 8
    paper_seeds: int = 8
    paper_methods: tuple[str, ...] = ("approximate", "exact")
    sizes: tuple[int, ...] = (4, 8, 16)
    table2_samples: int = 8
    reference_size: int | None = 8
    epochs: tuple[int, ...] = (1, 2, 3)
    multi: tuple[int, ...] = (8, 16, 32)
    share_seeds: int = 8
    audit_seeds: int = 8
    ablation_seeds: int = 8
    restarts: int | None = None
    iterations: int | None = None
    feature_iterations: int | None = None
    sharpen_iterations: int | None = None

    def check(self) -> None:
        for name in ("seeds", "table2_samples", "share_seeds", "audit_seeds", "ablation_seeds"):
            if getattr(self, name) < 1:
                raise CourseError(f"{name} must be at least 1; got {getattr(self, name)}.")
        if not 0 <= self.paper_seeds <= self.seeds:
            raise CourseError(f"paper_seeds must lie in 0..seeds ({self.seeds}); got {self.paper_seeds}.")
        for m in self.paper_methods:
            check_choice(m, ("approximate", "exact"), "unlearning method of the paper preset")
        if not self.sizes or not self.epochs or not self.multi:
            raise CourseError("sizes, epochs and multi each need at least one value.")
        if any(int(v) < 1 for v in self.epochs + self.multi) or any(int(v) < 2 for v in self.sizes):
            raise CourseError("Every training-set size must be >= 2, every epoch count and number of removed "
                              "samples >= 1.")
        if self.reference_size is not None and self.reference_size < 2:
            raise CourseError(f"reference_size must be >= 2 (or None); got {self.reference_size}.")
        for name in ("restarts", "iterations"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise CourseError(f"{name} must be at least 1 (or None: the inversion budget's); got {value}.")
        for name in ("feature_iterations", "sharpen_iterations"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise CourseError(f"{name} must be >= 0 (or None: the inversion budget's); got {value}.")

    def inversion(self, profile=None, preset: str = "course", **overrides) -> InversionConfig:
        """The :class:`InversionConfig` of these studies under ``preset`` (``"paper"`` or ``"course"``).

        The budget's restarts and iterations replace the profile's; the paper preset keeps its
        additions off whatever the budget says (no feature or sharpening stage).
        """
        check_choice(preset, PRESETS, "inversion preset")
        sizes = {"restarts": self.restarts, "iterations": self.iterations, "progress": False}
        if preset == "paper":
            return InversionConfig.paper(profile, **{**sizes, **overrides})
        sizes.update(feature_iterations=self.feature_iterations, sharpen_iterations=self.sharpen_iterations)
        return InversionConfig.for_profile(profile, **{**sizes, **overrides})


# --------------------------------------------------------------------------- the result

@dataclass
class RecoveryStudyResult(Result):
    """One study of chapter 3: a row per attack, the images, and a summary.

    Attributes
    ----------
    study:
        ``"seeds"``, ``"sizes"``, ``"epochs"``, ``"multi"``, ``"shares"``, ``"audit"`` or ``"ablation"``.
    rows:
        One dict per attack (or per removed sample), the columns of :meth:`table`.
    summary:
        The study's aggregate numbers (medians, Table 2, gains), JSON-serialisable.
    originals, images:
        The removed samples ``(S, C, H, W)`` and, per row label of the figure, the recoveries paired
        with them (empty for tables and studies without images).
    titles:
        Column titles of the figure (one per removed sample).
    settings:
        What ran: dataset, model, profile, presets, the inversion settings, the budget.
    results_path, computed:
        Where a stored study lies (:meth:`save`), and ``False`` when it was read from there.
    """

    study: str
    rows: list[dict]
    summary: dict = field(default_factory=dict)
    originals: torch.Tensor | None = None
    images: dict = field(default_factory=dict)
    titles: list[str] = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    results_path: str = ""
    computed: bool = True

    def save(self, path: Path, key: str) -> None:
        """Store the study: its images with safetensors, the rest in the JSON beside them (both atomically)."""
        tensors = {f"image/{k}": v for k, v in self.images.items()}
        if self.originals is not None:
            tensors["originals"] = self.originals
        save_tensors(tensors, path, {"study": self.study, "rows": self.rows, "summary": self.summary,
                                     "titles": self.titles, "settings": self.settings,
                                     "image_rows": list(self.images)}, key=key)
        self.results_path = str(path)

    @classmethod
    def load(cls, path: Path, key: str) -> "RecoveryStudyResult | None":
        """The study stored at ``path`` if it is the one ``key`` names, else ``None``."""
        found = read_verified(path, key) if Path(path).exists() else None
        if found is None:
            return None
        t, meta = found
        return cls(meta["study"], meta["rows"], meta["summary"], t.get("originals"),
                   {k: t[f"image/{k}"] for k in meta["image_rows"]}, meta["titles"], meta["settings"],
                   results_path=str(path), computed=False)

    def table(self):
        """The rows as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)

    def plot(self):
        """Originals above each row of recoveries (image studies), else a bar chart of the summary's PSNRs."""
        import matplotlib.pyplot as plt

        from .. import viz

        if self.originals is not None and self.images:
            labels = list(self.images)
            return viz.image_rows([self.originals] + [self.images[k] for k in labels],
                                  ["original"] + [k.replace(", θ₀", ",\nθ₀") for k in labels], self.titles or None)
        values = {k: v for k, v in self.summary.get("median_psnr", {}).items() if v is not None}
        fig, ax = plt.subplots(figsize=(6.5, 2.8))
        ax.bar(range(len(values)), list(values.values()), color="tab:blue")
        ax.set_xticks(range(len(values)))
        ax.set_xticklabels(list(values), rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("median PSNR (dB)")
        ax.set_title(f"chapter 3, {self.study} study", fontsize=10)
        fig.tight_layout()
        return fig

    def to_dict(self) -> dict:
        return {"study": self.study, "settings": self.settings, "summary": self.summary, "rows": self.rows}

    def median(self, column: str = "psnr", **where) -> float | None:
        """Median of ``column`` over the rows matching ``where`` (e.g. ``preset="paper"``)."""
        return finite_median([r[column] for r in self.rows if all(r.get(k) == v for k, v in where.items())])

    def mean(self, column: str = "psnr", **where) -> float | None:
        """Mean of ``column`` over the rows matching ``where``."""
        return finite_mean([r[column] for r in self.rows if all(r.get(k) == v for k, v in where.items())])


# --------------------------------------------------------------------------- shared steps

def study_setup(dataset: str, model: str | None, profile, setup, budget: RecoveryStudiesBudget | None,
                precision: str, label: str = "known"):
    """Validate the shared options and return ``(pipeline, budget)`` before anything is trained."""
    check_choice(precision, PRECISIONS, "precision")
    check_choice(label, LABEL_MODES, "label mode")
    kind = setup.public.kind if setup is not None else load_dataset(dataset, "train").kind
    if kind != "image":
        name = setup.dataset if setup is not None else dataset
        raise CourseError(f"Chapter 3's studies recover images; {name!r} is tabular (run_recovery handles tables).")
    if setup is None:
        budget = budget or RecoveryStudiesBudget.for_profile(profile)
        setup = prepare_pipeline(dataset, model or recovery_model_for(dataset), profile=profile, progress=False)
    else:
        budget = budget or RecoveryStudiesBudget.for_profile(setup.profile.name)
    return setup, budget


def attack_case(case, config: InversionConfig, *, seed: int, label: str = "known",
                estimator: str = "difference") -> RecoveryResult:
    """The server's attack on one :class:`UnlearningCase`, indices in Du and the mean-image baseline added."""
    result = attack_unlearned_model(case.original, case.unlearned, case.forget, label_mode=label, config=config,
                                    seed=seed, reference=case.pretrained, estimator=estimator,
                                    pretrained=case.pretrained, train_size=len(case.train_set))
    for row, idx in zip(result.samples, case.forget_indices):
        row["index"] = int(idx)
    result.summary["baseline_mean_image_psnr"] = finite_mean(M.baseline_mean_image_psnr(case.train_set.x, case.forget.x))
    result.settings = {**case.settings, **result.settings}
    return result


def _row(result: RecoveryResult, **keys) -> dict:
    """The table row of a single-sample attack."""
    s = result.samples[0]
    return {**keys, "index": s["index"], "label": s["label"], "psnr": s["psnr"], "ssim": s["ssim"],
            "rmse": s["rmse"], "lpips": s["lpips"], "baseline_psnr": result.summary["baseline_mean_image_psnr"],
            "estimate_cosine": result.summary.get("estimate_cosine"), "seconds": result.cost["seconds"]}


def stored_study(study: str, pipe, budget: RecoveryStudiesBudget, out, **settings) -> tuple[Path, str]:
    """``(path, key)`` of a study's stored result under ``out`` (default ``results_dir("recovery-studies")``).

    The key hashes the pipeline's checkpoints, the budget, the study's own settings and the source of
    the library (:func:`~course_lib.cache.library_key`): a rerun of the same study reads the result
    back, and any change computes it again.
    """
    key = config_key({"study": study, "checkpoints": {k: Path(v).name for k, v in pipe.cache_paths.items()},
                      "budget": budget.to_dict(), "library": library_key(), **settings})
    folder = prepare_output(Path(out) if out is not None else results_dir("recovery-studies"))
    return folder / f"{study}-{pipe.dataset}-{key}.safetensors", key


def _settings(study: str, pipe, budget: RecoveryStudiesBudget, configs: dict, **extra) -> dict:
    return {"study": study, "dataset": pipe.dataset, "model": pipe.model_name, "profile": pipe.profile.name,
            "budget": budget.to_dict(), "inversion": {k: c.to_dict() for k, c in configs.items()}, **extra}


# --------------------------------------------------------------------------- the studies

@recipe("recovery-seeds", chapter="3", command="course-lib recovery-study seeds")
def run_recovery_seeds(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                       seed: int = 0, methods=("approximate", "exact"), presets=PRESETS,
                       budget: RecoveryStudiesBudget | None = None, precision: str = "auto", setup=None,
                       progress: bool = False) -> RecoveryStudyResult:
    """One removed sample per seed, exact and approximate unlearning, under each preset (Fig. 3).

    Seeds ``seed .. seed + budget.seeds - 1``; the paper preset attacks the first
    ``budget.paper_seeds`` of them under ``budget.paper_methods`` (the same unlearned models and
    random starts as the course's attack). Rows: ``preset, method, seed, index, label, psnr, ssim, rmse, lpips, baseline_psnr,
    estimate_cosine, seconds``; ``summary["median_psnr"]`` per ``"<preset>/<method>"``.
    """
    for m in methods:
        check_choice(m, ("approximate", "exact"), "unlearning method")
    for p in presets:
        check_choice(p, PRESETS, "inversion preset")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    configs = {p: budget.inversion(pipe.profile.name, p) for p in presets}
    rows, originals, images = [], {}, {}
    for method in methods:
        for s in range(budget.seeds):
            case = make_unlearning_case(setup=pipe, unlearning=method, seed=seed + s, precision=precision)
            for preset in presets:
                if preset == "paper" and (s >= budget.paper_seeds or method not in budget.paper_methods):
                    continue
                res = attack_case(case, configs[preset], seed=seed + s)
                rows.append(_row(res, preset=preset, method=method, seed=seed + s))
                originals.setdefault(seed + s, res.originals[0])
                images.setdefault(f"{method}, {preset}", []).append(res.recovered[0])
    summary = {"median_psnr": {f"{p}/{m}": finite_median([r["psnr"] for r in rows if (r["preset"], r["method"]) == (p, m)])
                               for m in methods for p in presets}}
    summary["mean_baseline_psnr"] = finite_mean([r["baseline_psnr"] for r in rows])
    seeds_shown = sorted(originals)
    return RecoveryStudyResult("seeds", rows, summary, torch.stack([originals[s] for s in seeds_shown]),
                               {k: torch.stack(v) for k, v in images.items()}, [f"seed {s}" for s in seeds_shown],
                               _settings("seeds", pipe, budget, configs, seed=seed, methods=list(methods)))


@recipe("recovery-sizes", chapter="3", command="course-lib recovery-study sizes")
def run_recovery_sizes(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                       seed: int = 0, preset: str = "course", budget: RecoveryStudiesBudget | None = None,
                       precision: str = "auto", setup=None, out=None, resume: bool = True,
                       progress: bool = False) -> RecoveryStudyResult:
    """Small training sets (Figs. 5-6, Table 2): M fine-tuned on N samples of Du, each removed in turn.

    For every N of ``budget.sizes``, exact and approximate unlearning of the first
    ``budget.table2_samples`` samples (IDs 0, 1, ...) of one training set chosen by ``seed``; at
    ``budget.reference_size`` also exact unlearning attacked by the server that knows theta_0 and N
    (:func:`~course_lib.attacks.gradient_estimation.estimate_gradient_reference`, an addition).
    ``summary["table2"]``: per (N, method) the min / mean / max of PSNR and RMSE with the IDs, as
    in the paper's Table 2. The result is stored in ``out`` (:func:`stored_study`); a rerun with the
    same models, budget and library reads it back unless ``resume=False``.
    """
    check_choice(preset, PRESETS, "inversion preset")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    path, key = stored_study("sizes", pipe, budget, out, seed=seed, preset=preset, precision=precision)
    stored = RecoveryStudyResult.load(path, key) if resume else None
    if stored is not None:
        return stored
    config = budget.inversion(pipe.profile.name, preset)
    rows, originals, images = [], {}, {}
    for n in budget.sizes:
        methods = {"exact": "difference", "approximate": "difference"}
        if budget.reference_size is not None and n == budget.reference_size:
            methods[REFERENCE] = "reference"
        for j in range(min(int(n), budget.table2_samples)):
            for method, estimator in methods.items():
                unlearning = "approximate" if method == "approximate" else "exact"
                case = make_unlearning_case(setup=pipe, unlearning=unlearning, train_size=int(n), forget=[j],
                                            seed=seed, precision=precision)
                res = attack_case(case, config, seed=seed, estimator=estimator)
                rows.append(_row(res, train_size=int(n), method=method, id=j, preset=preset))
                if n == budget.sizes[min(1, len(budget.sizes) - 1)]:
                    originals.setdefault(j, res.originals[0])
                    images.setdefault(method, []).append(res.recovered[0])
    table2 = []
    for n in budget.sizes:
        for method in dict.fromkeys(r["method"] for r in rows if r["train_size"] == n):
            sel = [r for r in rows if r["train_size"] == n and r["method"] == method]
            ps = [r["psnr"] for r in sel]
            table2.append({"N": int(n), "method": method, "PSNR min": min(ps),
                           "PSNR min ID": sel[ps.index(min(ps))]["id"], "PSNR mean": finite_mean(ps),
                           "PSNR max": max(ps), "PSNR max ID": sel[ps.index(max(ps))]["id"],
                           "RMSE min": min(r["rmse"] for r in sel), "RMSE mean": finite_mean([r["rmse"] for r in sel]),
                           "RMSE max": max(r["rmse"] for r in sel),
                           "gain over baseline (dB)": finite_mean([r["psnr"] - r["baseline_psnr"] for r in sel])})
    ids = sorted(originals)
    result = RecoveryStudyResult("sizes", rows, {"table2": table2,
                                                 "shown_size": budget.sizes[min(1, len(budget.sizes) - 1)]},
                                 torch.stack([originals[j] for j in ids]) if ids else None,
                                 {k: torch.stack(v) for k, v in images.items()}, [f"ID {j}" for j in ids],
                                 _settings("sizes", pipe, budget, {preset: config}, seed=seed))
    result.save(path, key)
    return result


@recipe("recovery-epochs", chapter="3", command="course-lib recovery-study epochs")
def run_recovery_epochs(dataset: str = "mnist-5k", model: str | None = None, *, profile: str | None = None,
                        seed: int = 0, preset: str = "course", train_size: int | None = None,
                        budget: RecoveryStudiesBudget | None = None, precision: str = "auto", setup=None,
                        sizes: RecoveryStudyResult | None = None, progress: bool = False) -> RecoveryStudyResult:
    """More fine-tuning epochs (Fig. 7): the same training set and removed sample (ID 0), m = 1, 2, 3.

    ``train_size`` defaults to the budget's ``reference_size`` (else its first size), so the run at
    one epoch is Table 2's ID 0: pass the :func:`run_recovery_sizes` result of the same seed and
    preset as ``sizes`` to reuse those rows instead of attacking again (their images are not kept,
    so the figure then starts at the second epoch count). Rows: ``epochs, method, psnr, rmse,
    estimate_cosine, reused, ...``.
    """
    check_choice(preset, PRESETS, "inversion preset")
    pipe, budget = study_setup(dataset, model, profile, setup, budget, precision)
    n = int(train_size or budget.reference_size or budget.sizes[0])
    config = budget.inversion(pipe.profile.name, preset)
    reusable = {}
    if sizes is not None:
        if sizes.study != "sizes" or sizes.settings.get("seed") != seed:
            raise CourseError("sizes= must be the run_recovery_sizes result of the same seed.")
        reusable = {r["method"]: r for r in sizes.rows if r["train_size"] == n and r["id"] == 0
                    and r["preset"] == preset and r["method"] in ("exact", "approximate")}
    rows, images, original, shown = [], {}, None, []
    for e in budget.epochs:
        for method in ("exact", "approximate"):
            if int(e) == 1 and pipe.finetune_epochs == 1 and method in reusable:
                rows.append({**reusable[method], "epochs": 1, "reused": True})
                continue
            case = make_unlearning_case(setup=pipe, unlearning=method, train_size=n, epochs=int(e), forget=[0],
                                        seed=seed, precision=precision)
            res = attack_case(case, config, seed=seed)
            rows.append({**_row(res, epochs=int(e), method=method, train_size=n, preset=preset), "reused": False})
            original = res.originals[0] if original is None else original
            images.setdefault(method, []).append(res.recovered[0])
            if method == "exact":
                shown.append(int(e))
    summary = {"psnr": {f"{r['method']}/{r['epochs']}": r["psnr"] for r in rows}}
    complete = {k: v for k, v in images.items() if len(v) == len(shown)}
    return RecoveryStudyResult("epochs", rows, summary,
                               original.unsqueeze(0).expand(len(shown), *original.shape) if original is not None else None,
                               {k: torch.stack(v) for k, v in complete.items()}, [f"{e} epoch(s)" for e in shown],
                               _settings("epochs", pipe, budget, {preset: config}, seed=seed, train_size=n))


__all__ = ["RecoveryStudiesBudget", "RecoveryStudyResult", "PRESETS", "REFERENCE", "attack_case", "study_setup",
           "run_recovery_seeds", "run_recovery_sizes", "run_recovery_epochs"]
